"""The clinical defaults every patient's thresholds start from. docs/alerts.md cites the source
of each; values marked "medmesh" are engineering choices (hysteresis, windows), not guidance."""

from __future__ import annotations

from medmesh.domain.care_plans import CarePlan, Thresholds

DEFAULT_THRESHOLDS = Thresholds(
    # BTS 2017 oxygen guideline: target 94-98 % for most adults, 88-92 % with risk of
    # hypercapnic failure (COPD care plans lower these). Clear level and windows: medmesh.
    spo2_low=90,
    spo2_critical=85,
    spo2_clear=92,
    spo2_sustain_minutes=5,
    spo2_recover_minutes=10,
    # ACC/AHA 2017 high blood pressure guideline: hypertensive crisis above 180 and/or 120.
    systolic_crisis=180,
    diastolic_crisis=120,
    systolic_clear=160,
    diastolic_clear=100,
    # ADA Standards of Care (6. Glycemic goals): level 1 hypoglycaemia below 70 mg/dL,
    # level 2 below 54; International Consensus on Time in Range 2019: level 2 high above 250.
    glucose_low=70,
    glucose_urgent_low=54,
    glucose_low_clear=80,
    glucose_high=250,
    glucose_high_clear=230,
    # CGM trend arrows: falling 2-3 mg/dL/min ("falling"), over the last 15-20 minutes.
    glucose_fall_rate=2,
    glucose_fall_clear=1,
    glucose_trend_minutes=15,
    # RCP NEWS2 2017 scores pulse <= 40 and >= 131 with 3 (the red band).
    heart_rate_low=40,
    heart_rate_high=130,
    heart_rate_low_clear=45,
    heart_rate_high_clear=120,
    heart_rate_sustain_minutes=5,
    heart_rate_recover_minutes=5,
    # RCP NEWS2 2017 clinical response: 5-6 urgent, 7 or more emergency; scale 1 for SpO2.
    news2_urgent=5,
    news2_critical=7,
    news2_spo2_scale=1,
    news2_max_age_minutes=60,
    news2_min_parameters=3,
    news2_recover_minutes=15,
    stale_after_minutes=60,
    escalate_urgent_minutes=15,
    escalate_critical_minutes=5,
)


def thresholds_for(plan: CarePlan | None) -> Thresholds:
    """The patient's thresholds: the defaults with the care plan's overrides applied."""
    if plan is None:
        return DEFAULT_THRESHOLDS
    return DEFAULT_THRESHOLDS.with_overrides(plan.threshold_overrides)
