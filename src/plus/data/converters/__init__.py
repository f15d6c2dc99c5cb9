"""Converters from the raw task releases to the task-directory format of :mod:`plus.data.tasks`.

Two sources per task: ``embedded`` (the real subsets in ``data/embedded``, used by the demo) and
``canonical`` (the full public releases listed in the data-sources spec). Every split rule is seeded and
documented in DATA.md and in the manifest (``rules``, ``notes``). Records whose labels fall outside the
reference's label set are dropped and counted (``dropped``), relabelled the way the reference does and
counted (``relabelled``), or raise InputError. Where the reference's handling is a quirk, a
``data_<task>_<option>`` reference-fidelity switch (manifest ``fidelity``) selects it or the corrected one.

One module per source family declares its tasks' raw files and converters (its `TaskData`); `DATA` maps each
task to its declaration, in the paper's task order. `plus data convert` (:mod:`plus.data.convert`) runs them.
"""

from __future__ import annotations

from plus.data.converters.common import TaskData
from plus.data.converters.homology import HOMOLOGY
from plus.data.converters.localization import LOCALIZATION
from plus.data.converters.secstr import SECSTR
from plus.data.converters.solubility import SOLUBILITY
from plus.data.converters.tape import FLUORESCENCE, STABILITY
from plus.data.converters.transmembrane import TRANSMEMBRANE

DATA: dict[str, TaskData] = {
    "homology": HOMOLOGY,
    "solubility": SOLUBILITY,
    "localization": LOCALIZATION,
    "stability": STABILITY,
    "fluorescence": FLUORESCENCE,
    "secstr": SECSTR,
    "transmembrane": TRANSMEMBRANE,
}


def register(name: str, task_data: TaskData) -> None:
    """Add a task's data declaration to `DATA` (a module of users' own tasks calls this when imported)."""
    if name in DATA:
        raise ValueError(f"task {name!r} is already declared ({DATA[name].embedded.__module__})")
    DATA[name] = task_data
