"""rotator/config/policy.py reads policy files with tomli (tomllib's parser, compiled) where the
daemon extra installs it, and with the standard library's tomllib otherwise: a file must mean the
same either way (the Lambda and a bare `pip install rotator` have no tomli)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rotator.config import policy
from rotator.config.policy import PolicyFileError, load_config

#: TOML 1.1 (a newline in an inline table, \e, times without seconds, \x escapes): Python 3.11's
#: tomllib refuses each, and so must the policy loader whichever parser it has
TOML_1_1 = ['a = {\n b = 1,\n}', 'a = "\\e"', 'a = 07:32', 'a = "\\xff"']


def test_the_daemon_extra_reads_with_the_compiled_parser() -> None:
    tomli = pytest.importorskip("tomli")
    assert policy.tomllib is tomli


@pytest.mark.parametrize("text", TOML_1_1)
def test_toml_1_1_is_refused_as_python_3_11s_tomllib_refuses_it(tmp_path: Path, text: str) -> None:
    """tomli 2.4 reads TOML 1.1 (pyproject.toml bounds it below that): a file that only it could read
    would validate on a daemon host and fail in the Lambda."""
    path = tmp_path / "rotator.toml"
    path.write_text(text + "\n")
    with pytest.raises(PolicyFileError, match="not valid TOML"):
        load_config(path)


def test_without_tomli_the_standard_library_reads_the_file_with_the_same_errors(tmp_path: Path) -> None:
    bad = tmp_path / "rotator.toml"
    bad.write_text('[rotator]\njournal = "journal.db"\n[[policy]]\nname = "p"\nschedule = \n')
    probe = (
        "import sys\n"
        "{hide}"
        "from pathlib import Path\n"
        "from rotator.config import policy\n"
        "try:\n"
        "    policy.load_config(Path(sys.argv[1]))\n"
        "except policy.PolicyFileError as exc:\n"
        "    print(policy.tomllib.__name__, '|', exc)\n"
    )
    answers = []
    for hide in ("sys.modules['tomli'] = None  # as if not installed\n", ""):
        done = subprocess.run([sys.executable, "-c", probe.format(hide=hide), str(bad)], capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        answers.append(done.stdout.strip().split(" | ", 1))
    assert answers[0][0] == "tomllib", answers
    assert "not valid TOML" in answers[0][1] and answers[0][1] == answers[1][1], answers
