"""``python -m labkit.widgets readme-figure`` draws the README's picture: one PNG under 2 MB.

It runs here on a tiny untrained model with few identities, chunks and steps (seconds): the test checks the
command and the file, not what a trained model shows.
"""

from PIL import Image

from labkit.widgets import main


def test_readme_figure_command_writes_one_png_under_2_mb(tmp_path, capsys):
    import torch

    from labkit.model import IdentityVideoDiT

    torch.manual_seed(0)
    IdentityVideoDiT(sample_size=32, max_frames=8, dim=32, depth=1, num_heads=2, identity_dim=32,
                     num_identity_tokens=4).save_pretrained(tmp_path / "model")
    out = tmp_path / "docs" / "driftlab.png"
    main(["readme-figure", "--model", str(tmp_path / "model"), "--out", str(out), "--identities", "2",
          "--chunks", "2", "--steps", "2"])
    assert out.is_file() and 0 < out.stat().st_size < 2_000_000, out
    with Image.open(out) as image:
        assert image.format == "PNG" and min(image.size) >= 400, image.size
    assert "wrote" in capsys.readouterr().out
