"""The HTML report (rendered in headless Chromium) and Grad-CAM."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from mitoscope.detect import DetectConfig, detect_slide
from mitoscope.report import ensemble_gradcam, gradcam
from mitoscope.report.draw import colormap
from mitoscope.slide import ArraySlide
from test_pipeline import _nuclei_image, make_tiny_classifier

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)


class _Bright:
    """A model whose MF logit is the summed activation of a 1x1 convolution of the red channel."""

    def __new__(cls):
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.cam_layer = nn.Conv2d(3, 2, 1, bias=False)
                with torch.no_grad():
                    self.cam_layer.weight.zero_()
                    self.cam_layer.weight[0, 0] = 1.0  # channel 0 = red
                    self.cam_layer.weight[1, 2] = 1.0  # channel 1 = blue (ignored by the head)
                self.use_mask = False

            def forward(self, x, mask=None):
                f = self.cam_layer(x)
                return {"mf": f[:, 0].flatten(1).mean(1), "atypical": f[:, 1].flatten(1).mean(1)}

        return Net()


def test_gradcam_localises_what_the_output_uses() -> None:
    net = _Bright()
    img = np.zeros((2, 32, 32, 3), np.uint8)
    img[0, 2:10, 2:10, 0] = 255  # red square top-left (used by "mf")
    img[0, 20:30, 20:30, 2] = 255  # blue square bottom-right (not used by "mf")
    img[1, 20:30, 2:10, 0] = 200
    cam = gradcam(net, net.cam_layer, img)
    assert cam.shape == (2, 32, 32) and cam.dtype == np.float32
    assert 0.0 <= cam.min() and cam.max() <= 1.0 + 1e-6
    assert cam[0, 5, 5] > 0.9 and cam[0, 25, 25] < 0.05
    assert cam[1, 25, 5] > 0.9 and cam[1, 5, 25] < 0.05
    assert not net.cam_layer._forward_hooks  # hooks removed
    at = gradcam(net, net.cam_layer, img, head="atypical")
    assert at[0, 25, 25] > 0.9 and at[0, 5, 5] < 0.05


def test_gradcam_on_a_loaded_classifier(tmp_path: Path) -> None:
    clf = make_tiny_classifier(tmp_path / "t.pt")
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    masks = np.zeros((3, 32, 32), bool)
    masks[:, 10:20, 10:20] = True
    cams = ensemble_gradcam(clf.models, [clf.gradcam_layer(m) for m in clf.models], patches, masks)
    assert cams.shape == (3, 32, 32) and np.isfinite(cams).all()
    assert cams.max() <= 1.0 + 1e-6
    assert gradcam(clf.models[0], clf.gradcam_layer(clf.models[0]), patches[:0]).shape == (
        0,
        32,
        32,
    )


def test_colormap_endpoints() -> None:
    c = colormap(np.array([0.0, 1.0, 0.5]))
    assert c.dtype == np.uint8 and c[0].tolist() == [0, 0, 4] and c[1].tolist() == [252, 255, 164]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("report")
    clf = make_tiny_classifier(d / "t.pt")
    centres = [(x, y) for x in range(60, 900, 110) for y in range(60, 700, 120)]
    img = _nuclei_image(720, 960, centres, r=8)
    detect_slide(
        ArraySlide(img, mpp=0.25, path="synthetic_nuclei.png"),
        classifier=clf,
        out_dir=d,
        config=DetectConfig(gallery_size=8),
        progress=False,
    )
    return d


def test_report_is_self_contained(report_dir: Path) -> None:
    html = (report_dir / "synthetic_nuclei.report.html").read_text()
    summary = json.loads((report_dir / "synthetic_nuclei.summary.json").read_text())
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert len(srcs) >= 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in html and "<script" not in html
    assert f"<b>{summary['n_mitoses']}</b>" in html
    assert str(summary["hotspot_2mm2"]["count"]) in html
    assert "Grad-CAM" in html


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_chromium(report_dir: Path) -> None:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from playwright.sync_api import sync_playwright

    summary = json.loads((report_dir / "synthetic_nuclei.summary.json").read_text())
    page_file = report_dir / "synthetic_nuclei.report.html"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(page_file.as_uri())
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.id || i.alt, i.complete, i.naturalWidth])"
            )
            text = page.inner_text("body")
            page.screenshot(path=str(report_dir / "report.png"), full_page=True)
        finally:
            browser.close()
    assert len(images) >= 2 + 2  # overview, heatmap, and at least one gallery card
    assert all(ok and w > 0 for _, ok, w in images), images
    ids = {i for i, _, _ in images}
    assert {"overview", "heatmap"} <= ids
    assert "Mitotic figures in synthetic_nuclei.png" in text
    assert "mitoses per mm² of tissue" in text
    assert str(summary["n_mitoses"]) in text
    assert "Top detections" in text
    assert (report_dir / "report.png").stat().st_size > 10_000


def test_spatial_layer_avoids_a_2x2_map() -> None:
    import torch
    from torch import nn

    from mitoscope.report import spatial_layer

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(3, 16, 3, 4, 1), nn.ReLU())  # 64 -> 16
            self.pad = nn.ZeroPad2d(1)
            self.b = nn.Sequential(nn.Conv2d(16, 16, 3, 4, 0), nn.ReLU())  # 18 -> 4
            self.c = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())  # 4 -> 2
            self.use_mask = False

        def forward(self, x):
            f = self.c(self.b(self.pad(self.a(x))))
            return {"mf": f.mean((1, 2, 3))}

    net = Net()
    assert spatial_layer(net, net.c, 64) is net.b  # 4 x 4, not the padded 18 x 18 map
    assert spatial_layer(net, net.c, 64, min_cells=2) is net.c
    cam = gradcam(
        net, spatial_layer(net, net.c, 64), torch.rand(2, 64, 64, 3).mul(255).byte().numpy()
    )
    assert cam.shape == (2, 64, 64)
