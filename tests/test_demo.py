from lightsr.demo import main
from lightsr.io import read_image


def test_demo_writes_images_and_prints_psnr(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--model", "bicubic"]) == 0
    assert read_image(tmp_path / "input_x4.png").shape == (150, 128, 3)
    assert read_image(tmp_path / "out_x4.png").shape == (600, 512, 3)
    # bicubic | lightsr | zoom column (3 crops of 96 px zoomed x2), 4-px gaps.
    assert read_image(tmp_path / "compare_x4.png").shape == (600, 512 * 2 + 192 + 12, 3)
    out = capsys.readouterr().out
    assert "PSNR-Y vs original: bicubic 25.94 dB" in out


def test_demo_reports_a_missing_model_on_one_line(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--weights", str(tmp_path / "none.pth")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "out_x4.png").exists()
