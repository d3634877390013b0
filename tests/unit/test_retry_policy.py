"""RetryPolicy: exponential, capped, jitter from an injected source; and ``info.retries``."""

import pytest

from nightwatch.domain.errors import InvalidTaskSpecError
from nightwatch.domain.jobspec import parse_info
from nightwatch.domain.retry import RetryPolicy, format_delay


def test_the_delay_doubles_per_attempt_up_to_the_cap():
    policy = RetryPolicy(base=10.0, cap=600.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 9)] == [10, 20, 40, 80, 160, 320, 600, 600]
    assert policy.delay(10_000) == 600.0  # no overflow however many attempts


@pytest.mark.parametrize("draw, expected", [(0.0, 40.0), (0.5, 36.0), (0.999999, 32.0)])
def test_jitter_takes_up_to_its_fraction_off_using_the_injected_source(draw, expected):
    policy = RetryPolicy(base=10.0, cap=600.0, jitter=0.2, random=lambda: draw)
    assert policy.delay(3) == pytest.approx(expected, abs=1e-3)


def test_jitter_never_passes_the_cap():
    policy = RetryPolicy(base=10.0, cap=60.0, jitter=0.5, random=lambda: 0.0)
    assert policy.delay(50) == 60.0


@pytest.mark.parametrize("kw", [{"base": 0}, {"base": 20, "cap": 10}, {"jitter": 1.5}, {"jitter": -0.1}])
def test_a_bad_policy_is_refused(kw):
    with pytest.raises(ValueError):
        RetryPolicy(**kw)


@pytest.mark.parametrize("seconds, text", [(9.6, "10s"), (20, "20s"), (60, "1m"), (150, "2m30s"),
                                           (3600, "1h"), (3900, "1h5m"), (0.2, "0s")])
def test_format_delay(seconds, text):
    assert format_delay(seconds) == text


def test_info_retries():
    assert parse_info('{"image": "alpine"}').retries is None
    assert parse_info('{"image": "alpine", "retries": 0}').retries == 0
    assert parse_info('{"image": "alpine", "retries": 100}').retries == 100


@pytest.mark.parametrize("value", ["-1", "101", "1.5", "true", '"3"', "[1]"])
def test_bad_info_retries_names_the_key_and_range(value):
    with pytest.raises(InvalidTaskSpecError, match=r"^info.retries must be a whole number from 0 to 100, got "):
        parse_info(f'{{"image": "alpine", "retries": {value}}}')
