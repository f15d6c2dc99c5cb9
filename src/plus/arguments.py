"""argparse argument types shared by the command modules (each module's `add_parser`)."""

from __future__ import annotations

import argparse
import json


def hparams_json(text: str) -> dict:
    """A JSON option (--hparams, --fidelity): the parsed value; not JSON is a usage error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--hparams is not valid JSON ({exc})") from exc


def json_object(text: str) -> dict:
    """A JSON-object option (`plus data convert --fidelity`); anything else is a usage error."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value
