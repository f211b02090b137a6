"""The report page: built from a real (tiny) search, with its figures."""
import re

from autotune import report, search, study as studies
from conftest import config
from autotune.ops import KERNELS, Shape

SHAPE = Shape(B=2, T=19, C=40, OC=24)


def test_report_shows_the_winner_its_search_and_the_records_it_skips(tmp_path, steady_anchor):
    storage = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    kernel = KERNELS["forward"]
    study = studies.open_study(kernel.problem(SHAPE), storage)
    for mr in (2, 3, 4, 5):
        study.enqueue_trial(config(mr, 1, 64, 1, 1, "rows-outer", 1).params())
    search.search(kernel, SHAPE, trials=4, storage=storage, directory=tmp_path / "tuned", progress=False)
    (tmp_path / "tuned" / "forward-1x1x1-0000000000.json").write_text("{not json")

    page = report.write(tmp_path / "out", storage, tmp_path / "tuned").read_text()
    assert "B=2,T=19,C=40,OC=24" in page and "38 x 24 x 40" in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert images == ["speed.png", "history-forward-38x24x40.png"]
    assert all((tmp_path / "out" / image).stat().st_size > 1000 for image in images)
    assert "importance" in page and "forward-1x1x1-0000000000.json" in page and "corrupt" in page
