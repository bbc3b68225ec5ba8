import subprocess
import sys

from facemogle.cli import main


def test_version_and_labels(capsys):
    assert main(["version"]) == 0
    assert "facemogle 0.1.0" in capsys.readouterr().out
    assert main(["labels"]) == 0
    out = capsys.readouterr().out
    assert "18  cloth" in out and "(204, 0, 0)" in out


def test_console_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "facemogle.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "version" in result.stdout
