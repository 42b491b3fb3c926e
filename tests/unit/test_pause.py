"""Pause annotations: both prefixes, Go's boolean spellings, precedence and exact errors."""

from __future__ import annotations

import pytest

from autoscale.errors import ConfigError
from autoscale.pause import Pause, parse_pause

KEDA = "autoscaling.keda.sh/"
OURS = "autoscale.dev/"


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        pytest.param(None, Pause(), id="none"),
        pytest.param({}, Pause(), id="empty"),
        pytest.param({"team": "payments", "paused": "true"}, Pause(), id="unrelated-ignored"),
        pytest.param({KEDA + "paused": "true"}, Pause(paused=True), id="paused"),
        pytest.param({KEDA + "paused": "false"}, Pause(), id="paused-false"),
        pytest.param({KEDA + "paused": "1"}, Pause(paused=True), id="paused-1"),
        pytest.param({KEDA + "paused": "T"}, Pause(paused=True), id="paused-T"),
        pytest.param({KEDA + "paused": "FALSE"}, Pause(), id="paused-FALSE"),
        pytest.param(
            {KEDA + "paused-replicas": "0"}, Pause(paused=True, replicas=0), id="paused-replicas-0"
        ),
        pytest.param(
            {KEDA + "paused-replicas": "+7"},
            Pause(paused=True, replicas=7),
            id="paused-replicas-+7",
        ),
        pytest.param(
            {KEDA + "paused": "false", KEDA + "paused-replicas": "3"},
            Pause(paused=True, replicas=3),
            id="paused-replicas-wins-over-paused-false",
        ),
        pytest.param({KEDA + "paused-scale-in": "true"}, Pause(scale_in=True), id="scale-in"),
        pytest.param({KEDA + "paused-scale-out": "true"}, Pause(scale_out=True), id="scale-out"),
        pytest.param(
            {KEDA + "force-activation": "true"}, Pause(force_activation=True), id="force-activation"
        ),
        pytest.param(
            {OURS + "paused-scale-in": "t", OURS + "paused-scale-out": "1"},
            Pause(scale_in=True, scale_out=True),
            id="our-prefix",
        ),
        pytest.param(
            {KEDA + "paused": "true", OURS + "paused": "True"}, Pause(paused=True), id="both-agree"
        ),
        pytest.param(
            {KEDA + "paused": "true", OURS + "paused": "false"}, Pause(), id="both-differ-ours-wins"
        ),
        pytest.param(
            {KEDA + "paused-replicas": "2", OURS + "paused-replicas": "5"},
            Pause(paused=True, replicas=5),
            id="replicas-differ-ours-wins",
        ),
        pytest.param(
            {KEDA + "force-activation": "false", OURS + "force-activation": "true"},
            Pause(force_activation=True),
            id="ours-enables-what-keda-disables",
        ),
    ],
)
def test_parse_pause(annotations: dict[str, str] | None, expected: Pause) -> None:
    """Every key under either prefix reads as KEDA reads it; ours wins a disagreement."""
    assert parse_pause(annotations) == expected


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        pytest.param(
            {KEDA + "paused": "yes"},
            'annotation autoscaling.keda.sh/paused: "yes" is not a boolean',
            id="paused-yes",
        ),
        pytest.param(
            {KEDA + "paused": ""},
            'annotation autoscaling.keda.sh/paused: "" is not a boolean',
            id="paused-empty",
        ),
        pytest.param(
            {KEDA + "paused": " true"},
            'annotation autoscaling.keda.sh/paused: " true" is not a boolean',
            id="paused-space",
        ),
        pytest.param(
            {OURS + "paused-scale-in": "on"},
            'annotation autoscale.dev/paused-scale-in: "on" is not a boolean',
            id="ours-scale-in-on",
        ),
        pytest.param(
            {KEDA + "paused-scale-out": "nope"},
            'annotation autoscaling.keda.sh/paused-scale-out: "nope" is not a boolean',
            id="scale-out",
        ),
        pytest.param(
            {KEDA + "force-activation": "2"},
            'annotation autoscaling.keda.sh/force-activation: "2" is not a boolean',
            id="force-activation-2",
        ),
        pytest.param(
            {KEDA + "paused-replicas": "-1"},
            'annotation autoscaling.keda.sh/paused-replicas: "-1" is not a replica count',
            id="replicas-negative",
        ),
        pytest.param(
            {KEDA + "paused-replicas": "1.5"},
            'annotation autoscaling.keda.sh/paused-replicas: "1.5" is not a replica count',
            id="replicas-fraction",
        ),
        pytest.param(
            {KEDA + "paused-replicas": ""},
            'annotation autoscaling.keda.sh/paused-replicas: "" is not a replica count',
            id="replicas-empty",
        ),
        pytest.param(
            {OURS + "paused-replicas": "2147483648"},
            'annotation autoscale.dev/paused-replicas: "2147483648" is not a replica count',
            id="replicas-over-int32",
        ),
        pytest.param(
            {KEDA + "paused": "maybe", OURS + "paused": "true"},
            'annotation autoscaling.keda.sh/paused: "maybe" is not a boolean',
            id="overridden-keda-value-still-checked",
        ),
    ],
)
def test_parse_pause_rejects(annotations: dict[str, str], message: str) -> None:
    """An invalid value is a ConfigError that names the annotation (KEDA would guess)."""
    with pytest.raises(ConfigError) as caught:
        parse_pause(annotations)
    assert str(caught.value).startswith(message)
