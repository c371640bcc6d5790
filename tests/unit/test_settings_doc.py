"""The README's settings table is the one the config classes generate, and no variable
has two defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from lab import settings_doc
from lab.config import LabConfig
from socketlab.config import EnvConfig, conflicting_defaults, env_field


def test_the_readme_table_is_up_to_date() -> None:
    readme = settings_doc.README.read_text()
    wanted = settings_doc.with_table(readme, settings_doc.render(settings_doc.config_classes()))
    assert readme == wanted, "README.md's settings table is stale: run `make settings-doc`"


def test_no_variable_has_two_defaults() -> None:
    assert conflicting_defaults(settings_doc.config_classes()) == {}


def test_every_module_is_imported_so_every_config_registers() -> None:
    imported = settings_doc.import_all()
    assert "lab.config" in imported
    assert "socketlab.config" in imported
    assert not any(name.endswith("__main__") for name in imported)  # they run programs
    assert LabConfig in settings_doc.config_classes()


@dataclass(frozen=True, kw_only=True)
class ShortTimeout(EnvConfig):
    timeout: float = env_field("SOCKETLAB_DOC_TIMEOUT", 1.0, "seconds")


@dataclass(frozen=True, kw_only=True)
class LongTimeout(EnvConfig):
    timeout: float = env_field("SOCKETLAB_DOC_TIMEOUT", 9.0, "seconds")


def test_two_defaults_for_one_variable_refuse_to_render() -> None:
    with pytest.raises(ValueError, match=r"SOCKETLAB_DOC_TIMEOUT: \['1', '9'\]"):
        settings_doc.render([ShortTimeout, LongTimeout])


def test_check_fails_on_a_stale_table_and_writing_fixes_it(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{settings_doc.BEGIN}\n| old |\n{settings_doc.END}\n\nmore\n")

    assert settings_doc.main(["--check", "--readme", str(readme)]) == 1
    assert "| old |" in readme.read_text(), "--check writes nothing"
    assert settings_doc.main(["--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "| `SOCKETLAB_SHAPING_TIMEOUT` | `30` |" in text
    assert "| old |" not in text
    assert text.endswith(f"{settings_doc.END}\n\nmore\n")
    assert settings_doc.main(["--check", "--readme", str(readme)]) == 0


def test_a_readme_without_markers_is_an_error(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no table here\n")
    assert settings_doc.main(["--readme", str(readme)]) == 1
    assert readme.read_text() == "# no table here\n"
