"""The task section of a recipe, and the schema pieces every section shares: one task's typed,
validated config (`TaskConfig`: family, columns by role, splits, labels, format, ...), `RecipeError`,
and the strict base model (unknown keys are errors). The whole recipe is in prefinetune/recipe/config.py.

    from prefinetune.recipe.task_config import TaskConfig
    TaskConfig.model_validate({"name": "rte", "label_names": ["entailment", "not_entailment"], ...})
"""
from __future__ import annotations

import re
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["Column", "family_roles", "RecipeError", "TaskConfig", "ColumnsSection", "HubSource"]

Column = Union[str, int]


def family_roles(family: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The column roles a family reads, (required, optional). Roles name what a column is for; the values
    in `columns` say where it is (a name, a dotted path into JSON objects, or an index for headerless files)."""
    from prefinetune.families.family import get_family

    return get_family(family).roles


class RecipeError(ValueError):
    """A recipe that cannot run: the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ColumnsSection(_Strict):
    text: Optional[Union[Column, list[Column]]] = Field(
        None, description="first text (name, dotted JSON path, or index; a list of columns is "
        "joined by spaces); multiple choice: the context; summarization: the source document")
    text_pair: Optional[Union[Column, list[Column]]] = Field(
        None, description="second text for pair tasks (a list of columns is joined); "
        "multiple choice: the question, paired with each choice")
    label: Optional[Column] = Field(None, description="class, value (regression) or correct choice")
    choices: Optional[Union[Column, list[Column]]] = Field(
        None, description="multiple choice: one column holding the list of choices, or one column per choice")
    context: Optional[Column] = Field(None, description="span: the passage answers are found in")
    question: Optional[Column] = Field(None, description="span: the question")
    answers: Optional[Column] = Field(None, description="span: answers with character offsets into context")
    id: Optional[Column] = Field(None, description="example id: span scores answers by it, `prefinetune predict` "
                                 "writes it (GLUE: index, SuperGLUE: idx); default the row number, 1-based")
    target: Optional[Column] = Field(None, description="summarization: the reference summary")
    tokens: Optional[Column] = Field(None, description="tagging: the words of a sentence (CoNLL-U: FORM; CoNLL: "
                                     "a column index; objects: a list)")
    tags: Optional[Column] = Field(None, description="tagging: one tag per word (CoNLL-U: UPOS or XPOS; CoNLL: "
                                   "a column index, e.g. -1 for the last)")


def _check_roles(family: str, columns: ColumnsSection, where: str, unlabeled: bool = False) -> None:
    """The family's required column roles are given (but the targets of an unlabeled split), and no role
    it does not read."""
    from prefinetune.families.family import get_family

    required, optional = family_roles(family)
    given = {role for role, col in columns.model_dump().items() if col is not None}
    targets = get_family(family).target_roles if unlabeled else ()
    missing = [r for r in required if r not in given and r not in targets]
    if missing:
        raise ValueError(f"family {family!r} needs columns {missing}" + ("" if where == "columns" else f" in {where}"))
    extra = sorted(given - set(required) - set(optional))
    if extra:
        raise ValueError(f"family {family!r} reads no columns {extra} ({where}); it reads {list(required + optional)}")


class HubSource(_Strict):
    path: str = Field(..., description="datasets.load_dataset path, e.g. 'nyu-mll/glue'")
    name: Optional[str] = Field(None, description="dataset config, e.g. 'cola'")
    revision: Optional[str] = None


class TaskConfig(_Strict):
    name: str = Field(..., description="task id: letters, digits, '_' and '-'")
    family: str = "classification"
    label_names: Optional[list[str]] = Field(
        None, min_length=2, description="classification: class names (a label's id is its index); multiple "
        "choice: optional choice keys such as [A, B, C, D] that labels may name")
    num_choices: Optional[int] = Field(None, ge=2, description="multiple choice: choices per row (others are bad rows)")
    metrics: Optional[list[Literal["accuracy", "f1", "mcc"]]] = Field(
        None, description="classification metrics (default accuracy; the dataset's convention, e.g. mrpc: "
        "[accuracy, f1], cola: [mcc])")
    doc_stride: int = Field(128, ge=1, description="span: tokens of overlap between windows of a long context")
    max_target_length: int = Field(128, ge=4, description="summarization: target tokens after truncation")
    format: Literal["tsv", "csv", "txt", "jsonl", "json", "parquet", "hub", "squad", "pydict", "conllu",
                    "conll"] = "jsonl"
    splits: dict[str, str] = Field(..., description="split -> file (relative to data.root) or hub split")
    columns: ColumnsSection
    split_columns: dict[str, ColumnsSection] = Field(
        default_factory=dict, description="split -> columns for a split whose file is laid out otherwise "
        "(CommonsenseQA: the official train file nests what the Hugging Face dev export keeps flat)")
    header: bool = Field(True, description="tsv/csv: first line holds column names")
    encoding: str = Field("utf-8", description="file encoding (utf-8-sig strips a BOM)")
    label_map: Optional[dict[str, str]] = Field(None, description="raw label value -> label name")
    hub: Optional[HubSource] = Field(None, description="with format: hub, the dataset to load")
    line_pattern: Optional[str] = Field(
        None, description="txt: regex each whole line must match; its named groups are the columns")
    explode: Optional[list[str]] = Field(
        None, min_length=1, description="object rows whose keys hold parallel lists (RACE: [questions, options, "
        "answers]): one record per list index, the other keys shared; rows are then numbered over items")
    loss_weight: float = Field(
        1.0, ge=0.0, description="multiplies the task's loss after its log(n) scaling (slot loss = loss_weight x "
        "loss / log n); 0 trains nothing on it: its own head stays bit-identical")
    unlabeled_splits: list[str] = Field(
        default_factory=list, description="splits with no gold targets (a benchmark's test file): prepare and "
        "training skip them, `prefinetune predict` reads them; their target columns are not read (the "
        "split's split_columns may leave them out)")
    unlabeled: list[str] = Field(
        default_factory=list, description="raw label values that mean 'no gold label' (SNLI's '-'): such rows "
        "are skipped and counted (the manifest's `unlabeled`), not bad rows")

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", v):
            raise ValueError(f"task name {v!r} may hold only letters, digits, '_' and '-'")
        return v

    @field_validator("label_names")
    @classmethod
    def _labels_unique(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"label_names repeat a name: {v}")
        return v

    @field_validator("splits")
    @classmethod
    def _has_train(cls, v: dict[str, str]) -> dict[str, str]:
        if "train" not in v:
            raise ValueError("splits must name a 'train' split")
        return v

    @model_validator(mode="after")
    def _hub_needs_source(self) -> "TaskConfig":
        if self.format == "hub" and self.hub is None:
            raise ValueError("format 'hub' needs a 'hub' section with the dataset path")
        if self.label_map is not None:
            unknown = sorted(set(self.label_map.values()) - set(self.label_names or []))
            if unknown:
                raise ValueError(f"label_map maps to names not in label_names: {unknown}")
        return self

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str) -> str:
        from prefinetune.families.family import get_family

        get_family(value)            # ValueError naming the known families
        return value

    @model_validator(mode="after")
    def _family_fields(self) -> "TaskConfig":
        from prefinetune.families.family import get_family

        unknown = sorted(set(self.split_columns) - set(self.splits))
        if unknown:
            raise ValueError(f"split_columns names splits {unknown} that are not in splits {sorted(self.splits)}")
        unknown = sorted(set(self.unlabeled_splits) - set(self.splits))
        if unknown or "train" in self.unlabeled_splits:
            raise ValueError(f"unlabeled_splits must name splits other than train (splits: {sorted(self.splits)}), "
                             f"not {self.unlabeled_splits}")
        _check_roles(self.family, self.columns, "columns")
        for split, columns in self.split_columns.items():
            _check_roles(self.family, columns, f"split_columns.{split}", split in self.unlabeled_splits)
        get_family(self.family).check_task(self)
        return self

    def for_split(self, split: str) -> "TaskConfig":
        """This task with the columns of `split` (its `split_columns` entry, where it has one); an
        unlabeled split's target columns are left out."""
        columns = self.split_columns.get(split, self.columns)
        if split in self.unlabeled_splits:
            from prefinetune.families.family import get_family

            columns = columns.model_copy(update=dict.fromkeys(get_family(self.family).target_roles))
        elif split not in self.split_columns:
            return self
        return self.model_copy(update={"columns": columns, "split_columns": {}})

    @property
    def labeled_splits(self) -> list[str]:
        """The splits prepared into shards (all but `unlabeled_splits`)."""
        return [split for split in self.splits if split not in self.unlabeled_splits]

    @model_validator(mode="after")
    def _row_options_fit(self) -> "TaskConfig":
        """explode takes object rows; unlabeled names values of a label column."""
        if self.explode and self.format in ("tsv", "csv", "txt", "conllu", "conll", "squad"):
            raise ValueError(f"explode takes object rows (jsonl, json, pydict, parquet, hub), not format "
                             f"{self.format!r}")
        if self.unlabeled and "label" not in family_roles(self.family)[0] + family_roles(self.family)[1]:
            raise ValueError(f"unlabeled names label values, and family {self.family!r} reads no label column")
        return self

    @model_validator(mode="after")
    def _txt_needs_pattern(self) -> "TaskConfig":
        if (self.format == "txt") != (self.line_pattern is not None):
            raise ValueError("format 'txt' needs line_pattern, and line_pattern is only for format 'txt'")
        if self.line_pattern is None:
            return self
        try:
            groups = set(re.compile(self.line_pattern).groupindex)
        except re.error as err:
            raise ValueError(f"line_pattern is not a valid regex: {err}") from None
        cols = self.columns
        named = [c for c in (cols.text, cols.text_pair, cols.label) if c is not None]
        missing = [c for c in named if c not in groups]
        if missing:
            raise ValueError(f"columns {missing} are not named groups of line_pattern (groups: {sorted(groups)})")
        return self

    @property
    def num_labels(self) -> int:
        """Classes of a classification task (1 for a regression output)."""
        from prefinetune.families.family import get_family

        return get_family(self.family).num_labels(self)


