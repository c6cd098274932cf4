import subprocess
import sys

from lightsr import __version__
from lightsr.cli import main


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert __version__ in capsys.readouterr().out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: lightsr" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "lightsr", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("lightsr ")
