"""Export formats: each trainer's documented file format, one :class:`Format` per ``--format``.

One module per trainer family: TRL (``dpo``, ``dpo-text``, ``sft``, ``trl-kto``), OpenAI
fine-tuning (``openai``, ``openai-dpo``), LLaMA-Factory (``llamafactory``,
``llamafactory-ranking``) and Axolotl (``axolotl``, ``axolotl-dpo``). A format is a SELECT over
the exported items (see :func:`items_sql`); :func:`dramaturg.export` applies curation's gates,
validates the stored rows, and writes the file. docs/exports.md shows a row of each and the
trainer-side configuration.

Adding a format: write its ``Format`` in the module of its trainer, add its name to
:data:`ExportFormat` and the ``Format`` to :data:`FORMATS`.
"""

from __future__ import annotations

from typing import get_args

from dramaturg.outputs._axolotl import AXOLOTL, AXOLOTL_DPO
from dramaturg.outputs._checks import checks_for
from dramaturg.outputs._format import Companion, ExportFormat, Format, Items, ToolCalls
from dramaturg.outputs._items import PAIRS, PROMPT_TYPE, items_sql
from dramaturg.outputs._llamafactory import LLAMAFACTORY, LLAMAFACTORY_RANKING
from dramaturg.outputs._openai import OPENAI, OPENAI_DPO
from dramaturg.outputs._trl import DPO, DPO_TEXT, KTO, SFT

__all__ = [
    "FORMATS",
    "PAIRS",
    "PROMPT_TYPE",
    "Companion",
    "ExportFormat",
    "Format",
    "Items",
    "ToolCalls",
    "checks_for",
    "items_sql",
]

# In `--format`'s order: TRL first (the default trainer), then each other trainer.
FORMATS: dict[ExportFormat, Format] = {
    f.name: f
    for f in (
        DPO,
        DPO_TEXT,
        SFT,
        KTO,
        OPENAI,
        OPENAI_DPO,
        LLAMAFACTORY,
        LLAMAFACTORY_RANKING,
        AXOLOTL,
        AXOLOTL_DPO,
    )
}

# The CLI's choices come from the Literal, the formats from this registry: they must agree.
if tuple(FORMATS) != get_args(ExportFormat):
    raise RuntimeError(f"ExportFormat {get_args(ExportFormat)} and FORMATS {tuple(FORMATS)} disagree")
