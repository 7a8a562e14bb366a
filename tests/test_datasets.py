"""fn.datasets: the seed's XOR and sine sets, and the airfoil loader (never the network)."""

from pathlib import Path

import numpy as np
import pytest
from helpers.airfoil_data import AIRFOIL, AVAILABLE, MISSING

from funcnn import datasets
from funcnn.datasets import DatasetError, DownloadError
from funcnn.errors import FuncnnError

SEED_URL = "http://archive.ics.uci.edu/ml/machine-learning-databases/00291/airfoil_self_noise.dat"
# Actual ranges of the UCI columns, used to make a synthetic but valid file.
RANGES = [(200, 20000), (0, 22.2), (0.0254, 0.3048), (31.7, 71.3), (0.0004, 0.0584), (103.4, 141)]


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Only file:// URLs may be opened, and the default cache is a temp folder."""
    real_urlopen = datasets.request.urlopen

    def urlopen(url, *args, **kwargs):
        if not str(url).startswith("file:"):
            raise AssertionError(f"a test tried to use the network: {url}")
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(datasets.request, "urlopen", urlopen)
    monkeypatch.setenv("FUNCNN_DATA_DIR", str(tmp_path / "env-cache"))


def synthetic_rows(n=1503, seed=0):
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(lo, hi, n) for lo, hi in RANGES])


def write_rows(path, rows, newline="\n"):
    text = newline.join("\t".join(f"{v:.6g}" for v in row) for row in rows) + newline
    path.write_bytes(text.encode("ascii"))
    return path


def file_url(path):
    return Path(path).resolve().as_uri()


def listing(folder):
    return sorted(p.name for p in Path(folder).iterdir()) if Path(folder).exists() else []


# --- xor and sine ----------------------------------------------------------------


def test_xor_is_the_seed_set():
    x, y = datasets.xor()
    np.testing.assert_array_equal(x, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(y, [[0], [1], [1], [0]])
    assert x.dtype == y.dtype == np.float64
    assert x.shape == (4, 2) and y.shape == (4, 1)
    x32, y32 = datasets.xor(np.float32)
    assert x32.dtype == y32.dtype == np.float32


def test_sine_is_the_seed_set_bit_for_bit():
    x_train = np.linspace(0, 2 * np.pi, 5000).reshape(-1, 1)
    y_train = np.sin(x_train)
    x_val = (x_train[1] - x_train[0]) / 2 + np.linspace(0, 2 * np.pi, 5000).reshape(-1, 1)
    y_val = np.sin(x_val)
    got = datasets.sine()
    assert isinstance(got, datasets.Dataset)
    for name, expected in zip(got._fields, (x_train, y_train, x_val, y_val), strict=True):
        actual = getattr(got, name)
        assert actual.dtype == np.float64 and actual.shape == (5000, 1), name
        np.testing.assert_array_equal(actual, expected, err_msg=name)


def test_sine_validation_points_lie_between_training_points():
    d = datasets.sine(n=11)
    step = d.x_train[1, 0] - d.x_train[0, 0]
    np.testing.assert_allclose(d.x_val[:, 0] - d.x_train[:, 0], step / 2, rtol=1e-12)
    np.testing.assert_allclose(d.y_val, np.sin(d.x_val), rtol=0, atol=0)
    assert d.x_train[-1, 0] == 2 * np.pi


def test_sine_dtype_and_errors():
    d = datasets.sine(dtype=np.float32)
    assert all(a.dtype == np.float32 for a in d)
    with pytest.raises(TypeError, match="dtype must be a float dtype"):
        datasets.sine(dtype=np.int32)
    with pytest.raises(TypeError, match="dtype must be a float dtype"):
        datasets.xor(dtype="nonsense")
    with pytest.raises(ValueError, match="n must be an int >= 2, got 1"):
        datasets.sine(n=1)


# --- airfoil: reading ------------------------------------------------------------


def test_airfoil_url_is_the_seeds():
    assert datasets.AIRFOIL_URL == SEED_URL


@pytest.mark.skipif(not AVAILABLE, reason=MISSING)
def test_airfoil_from_the_real_file():
    x, y = datasets.airfoil(AIRFOIL)
    assert x.shape == (1503, 5) and y.shape == (1503, 1)
    assert x.dtype == y.dtype == np.float64
    np.testing.assert_array_equal(x[0], [800, 0, 0.3048, 71.3, 0.00266337])
    assert y[0, 0] == 126.201
    np.testing.assert_array_equal(np.hstack([x, y]), np.loadtxt(AIRFOIL))
    x32, y32 = datasets.airfoil(str(AIRFOIL), dtype=np.float32)
    assert x32.dtype == y32.dtype == np.float32


def test_airfoil_from_a_valid_file_made_here(tmp_path):
    rows = synthetic_rows()
    path = write_rows(tmp_path / "airfoil.dat", rows, newline="\r\n")
    with path.open("ab") as f:
        f.write(b"\n\n")  # trailing blank lines are fine
    x, y = datasets.airfoil(path)
    np.testing.assert_allclose(np.hstack([x, y]), rows, rtol=1e-5)
    assert y.shape == (1503, 1)


def bad_row(column, value):
    rows = synthetic_rows()
    rows[7, column] = value
    return rows


@pytest.mark.parametrize(
    "content, message",
    [
        (b"1 2 3\n" * 1503, "line 1: expected 6 columns, got 3"),
        (b"<html><body>Moved</body></html>\n", "line 1: expected 6 columns, got 1"),
        (b"200 0 0.3 71 0.002 abc\n", "line 1 is not all numbers"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not plain text"),
        (b"", "it has 0 rows, expected 1503"),
        ("rows:10", "it has 10 rows, expected 1503"),
        ("rows:1504", "it has 1504 rows, expected 1503"),
        (("bad", 0, 50.0), r"line 8: frequency_hz = 50.0 is outside \[100.0, 25000.0\]"),
        (("bad", 5, 250.0), "line 8: spl_db = 250.0 is outside"),
        (("bad", 3, float("nan")), "line 8: velocity_m_s = nan is outside"),
        (("bad", 4, 0.0), "line 8: thickness_m is 0"),
    ],
)
def test_airfoil_rejects_bad_files_naming_the_path(tmp_path, content, message):
    path = tmp_path / "bad.dat"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        write_rows(path, synthetic_rows(n=int(content.split(":")[1])))
    else:
        write_rows(path, bad_row(content[1], content[2]))
    with pytest.raises(DatasetError, match=message) as info:
        datasets.airfoil(path)
    assert str(path) in str(info.value)
    hint = "give the path of a good copy of the UCI file (path= in Python, --data PATH"
    assert hint in str(info.value)
    assert isinstance(info.value, FuncnnError) and not isinstance(info.value, DownloadError)


def test_airfoil_missing_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.dat"
    with pytest.raises(DatasetError, match=f"cannot read {missing}"):
        datasets.airfoil(missing)


# --- airfoil: the cache folder ---------------------------------------------------


def test_default_cache_dir_env_and_home(monkeypatch, tmp_path):
    monkeypatch.setenv("FUNCNN_DATA_DIR", str(tmp_path / "somewhere"))
    assert datasets.default_cache_dir() == tmp_path / "somewhere"
    monkeypatch.delenv("FUNCNN_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets.default_cache_dir() == tmp_path / "home" / ".cache" / "funcnn"
    monkeypatch.setenv("FUNCNN_DATA_DIR", "")
    assert datasets.default_cache_dir() == tmp_path / "home" / ".cache" / "funcnn"


def test_airfoil_reads_the_cache_named_by_the_env_var(monkeypatch, tmp_path):
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    rows = synthetic_rows(seed=1)
    write_rows(env_dir / "airfoil_self_noise.dat", rows)
    monkeypatch.setenv("FUNCNN_DATA_DIR", str(env_dir))
    x, _ = datasets.airfoil(download=False)
    np.testing.assert_allclose(x, rows[:, :5], rtol=1e-5)


def test_cache_dir_argument_wins_over_env_var(monkeypatch, tmp_path):
    for name, seed in (("env", 1), ("arg", 2)):
        (tmp_path / name).mkdir()
        write_rows(tmp_path / name / "airfoil_self_noise.dat", synthetic_rows(seed=seed))
    monkeypatch.setenv("FUNCNN_DATA_DIR", str(tmp_path / "env"))
    x, _ = datasets.airfoil(cache_dir=tmp_path / "arg", download=False)
    np.testing.assert_allclose(x, synthetic_rows(seed=2)[:, :5], rtol=1e-5)


def test_path_wins_over_the_cache(tmp_path):
    (tmp_path / "cache").mkdir()
    write_rows(tmp_path / "cache" / "airfoil_self_noise.dat", synthetic_rows(seed=1))
    given = write_rows(tmp_path / "given.dat", synthetic_rows(seed=2))
    x, _ = datasets.airfoil(given, cache_dir=tmp_path / "cache")
    np.testing.assert_allclose(x, synthetic_rows(seed=2)[:, :5], rtol=1e-5)


def test_no_local_copy_and_download_false(tmp_path):
    expected = tmp_path / "empty" / "airfoil_self_noise.dat"
    with pytest.raises(DatasetError, match="no local copy at") as info:
        datasets.airfoil(cache_dir=tmp_path / "empty", download=False)
    assert str(expected) in str(info.value) and "FUNCNN_DATA_DIR" in str(info.value)


def test_corrupt_cache_file_is_an_error_not_a_silent_redownload(tmp_path):
    cached = tmp_path / "airfoil_self_noise.dat"
    cached.write_bytes(b"garbage\n")
    source = write_rows(tmp_path / "source.dat", synthetic_rows())
    with pytest.raises(DatasetError, match="delete it to download it again") as info:
        datasets.airfoil(cache_dir=tmp_path, url=file_url(source))
    assert str(cached) in str(info.value)
    assert cached.read_bytes() == b"garbage\n"


# --- airfoil: downloading (file:// URLs and fake openers only) -------------------


def test_download_lands_atomically_in_the_cache(tmp_path):
    source = write_rows(tmp_path / "source.dat", synthetic_rows(seed=3))
    cache = tmp_path / "new" / "cache"  # created on demand
    x, y = datasets.airfoil(cache_dir=cache, url=file_url(source))
    assert listing(cache) == ["airfoil_self_noise.dat"]  # no temp file left behind
    assert (cache / "airfoil_self_noise.dat").read_bytes() == source.read_bytes()
    np.testing.assert_allclose(np.hstack([x, y]), synthetic_rows(seed=3), rtol=1e-5)
    # the second call reads the cache: the source may be gone
    source.unlink()
    x2, _ = datasets.airfoil(cache_dir=cache, url=file_url(source))
    np.testing.assert_array_equal(x2, x)


def test_download_goes_to_the_env_var_cache(monkeypatch, tmp_path):
    source = write_rows(tmp_path / "source.dat", synthetic_rows())
    monkeypatch.setenv("FUNCNN_DATA_DIR", str(tmp_path / "env"))
    datasets.airfoil(url=file_url(source))
    assert listing(tmp_path / "env") == ["airfoil_self_noise.dat"]


def test_failed_download_is_a_clear_error_and_leaves_nothing(tmp_path):
    cache = tmp_path / "cache"
    missing = file_url(tmp_path / "does-not-exist.dat")
    with pytest.raises(DownloadError, match="download from .* failed") as info:
        datasets.airfoil(cache_dir=cache, url=missing)
    message = str(info.value)
    hint = "give the path of a local copy (path= in Python, --data PATH on the command line)"
    assert hint in message and "FUNCNN_DATA_DIR" in message
    assert str(cache / "airfoil_self_noise.dat") in message
    assert isinstance(info.value, OSError) and isinstance(info.value, FuncnnError)
    assert listing(cache) == []


class BrokenResponse:
    """A response that sends one chunk and then loses the connection."""

    def __init__(self, first):
        self.chunks = [first]

    def read(self, size=-1):
        if self.chunks:
            return self.chunks.pop()
        raise ConnectionResetError("connection reset by peer")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_interrupted_download_leaves_no_partial_file(monkeypatch, tmp_path):
    first = write_rows(tmp_path / "s.dat", synthetic_rows()).read_bytes()[:1000]
    monkeypatch.setattr(datasets.request, "urlopen", lambda url, timeout: BrokenResponse(first))
    with pytest.raises(DownloadError, match="ConnectionResetError: connection reset by peer"):
        datasets.airfoil(cache_dir=tmp_path / "cache", url="http://example.invalid/a.dat")
    assert listing(tmp_path / "cache") == []


def test_download_passes_the_timeout(monkeypatch, tmp_path):
    seen = {}

    def urlopen(url, timeout):
        seen.update(url=url, timeout=timeout)
        raise TimeoutError("timed out")

    monkeypatch.setattr(datasets.request, "urlopen", urlopen)
    with pytest.raises(DownloadError, match="TimeoutError: timed out"):
        datasets.airfoil(cache_dir=tmp_path, timeout=2.5)
    assert seen == {"url": SEED_URL, "timeout": 2.5}


def test_downloaded_content_is_checked_before_it_is_saved(tmp_path):
    page = tmp_path / "page.html"
    page.write_bytes(b"<html>\n<body>Service unavailable</body>\n</html>\n")
    with pytest.raises(DownloadError, match="the download from .* is not the UCI airfoil data"):
        datasets.airfoil(cache_dir=tmp_path / "cache", url=file_url(page))
    assert listing(tmp_path / "cache") == []


def test_oversized_download_is_refused(monkeypatch, tmp_path):
    source = write_rows(tmp_path / "source.dat", synthetic_rows())
    monkeypatch.setattr(datasets, "_MAX_DOWNLOAD_BYTES", 1000)
    with pytest.raises(DownloadError, match="larger than 1000 bytes"):
        datasets.airfoil(cache_dir=tmp_path / "cache", url=file_url(source))
    assert listing(tmp_path / "cache") == []


def test_unwritable_cache_is_a_clear_error(tmp_path):
    source = write_rows(tmp_path / "source.dat", synthetic_rows())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DatasetError, match="downloaded, but could not save it to") as info:
        datasets.airfoil(cache_dir=blocker / "cache", url=file_url(source))
    assert "cache_dir=" in str(info.value)
    assert listing(tmp_path) == ["a-file", "source.dat"]


def test_no_temp_file_survives_a_failed_rename(monkeypatch, tmp_path):
    source = write_rows(tmp_path / "source.dat", synthetic_rows())

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(datasets.os, "replace", failing_replace)
    with pytest.raises(DatasetError, match="disk full"):
        datasets.airfoil(cache_dir=tmp_path / "cache", url=file_url(source))
    assert listing(tmp_path / "cache") == []


# --- digits (shipped inside the package) -----------------------------------------

SHARED_DIGITS = Path(__file__).resolve().parents[2] / "shared/data/digits.csv.gz"


def test_digits_shapes_dtypes_and_scale():
    x, y = datasets.digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0 and x.max() == 1
    np.testing.assert_array_equal(np.unique(x * 16), np.arange(17))  # k / 16 exactly
    np.testing.assert_array_equal(np.bincount(y), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    raw, _ = datasets.digits(scale=False, dtype=np.float64)
    assert raw.dtype == np.float64 and raw.max() == 16
    np.testing.assert_array_equal(raw / 16, x)


def test_digits_first_image_is_the_files_first_row():
    x, y = datasets.digits(scale=False)
    first = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12,
             0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12,
             0, 0, 0, 0, 6, 13, 10, 0, 0, 0]
    np.testing.assert_array_equal(x[0, 0].ravel(), first)
    assert y[0] == 0 and list(y[:10]) == list(range(10))


@pytest.mark.skipif(not SHARED_DIGITS.exists(), reason=f"shared data not found at {SHARED_DIGITS}")
def test_digits_shipped_file_is_the_shared_one():
    import gzip

    x, y = datasets.digits(scale=False)
    with gzip.open(SHARED_DIGITS, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    np.testing.assert_array_equal(x.reshape(-1, 64), table[:, :64])
    np.testing.assert_array_equal(y, table[:, 64])
    x2, y2 = datasets.digits(path=SHARED_DIGITS)
    np.testing.assert_array_equal(x2, datasets.digits()[0])
    np.testing.assert_array_equal(y2, y)


def test_digits_split_is_fixed_stratified_and_a_partition():
    x, y = datasets.digits()
    parts = {name: datasets.digits(name) for name in ("train", "val", "test")}
    assert [len(parts[n][1]) for n in ("train", "val", "test")] == [1085, 357, 355]
    for name, (xs, ys) in parts.items():
        counts = np.bincount(ys, minlength=10)
        share = {"train": 3 / 5, "val": 1 / 5, "test": 1 / 5}[name]
        assert np.all(np.abs(counts - share * np.bincount(y)) < 1.5), (name, counts)
    # together they are every row exactly once: match rows by (label, image)
    rows = {(int(label), image.tobytes()) for image, label in zip(x, y)}
    joined = [(int(label), image.tobytes()) for xs, ys in parts.values() for image, label in zip(xs, ys)]
    assert len(joined) == len(set(joined)) == 1797 and set(joined) == rows
    # the rule in the docstring: the k-th image of each digit goes to k % 5
    fives = [i for i in np.flatnonzero(y == 5)]
    np.testing.assert_array_equal(parts["val"][0][parts["val"][1] == 5], x[fives[3::5]])
    np.testing.assert_array_equal(parts["test"][0][parts["test"][1] == 5], x[fives[4::5]])


def test_digits_errors(tmp_path):
    with pytest.raises(ValueError, match=r"split must be None or one of \['train', 'val', 'test'\], got 'valid'"):
        datasets.digits("valid")
    with pytest.raises(TypeError, match="dtype must be a float dtype"):
        datasets.digits(dtype=np.int64)
    missing = tmp_path / "nope.csv.gz"
    with pytest.raises(DatasetError, match=f"cannot read {missing}"):
        datasets.digits(path=missing)


def test_digits_checksum_is_verified(tmp_path):
    import gzip

    good = (Path(datasets.__file__).parent / "data_files" / "digits.csv.gz").read_bytes()
    text = gzip.decompress(good).decode()
    bad = tmp_path / "digits.csv.gz"
    bad.write_bytes(gzip.compress(text.replace("0,0,5,13", "0,0,5,14", 1).encode()))  # one pixel
    with pytest.raises(DatasetError, match="is not the UCI digits file: its sha256 is") as info:
        datasets.digits(path=bad)
    assert str(bad) in str(info.value) and datasets.DIGITS_SHA256 in str(info.value)
    assert isinstance(info.value, FuncnnError)


def test_digits_ships_with_its_attribution():
    folder = Path(datasets.__file__).parent / "data_files"
    readme = (folder / "README.md").read_text()
    assert "CC BY 4.0" in readme and "Alpaydin" in readme and datasets.DIGITS_SHA256 in readme
    assert "CC BY 4.0" in datasets.digits.__doc__ and "Alpaydin" in datasets.digits.__doc__
