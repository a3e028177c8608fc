"""IEEE 11073-10101 (MDC) codes that bedside monitors send in HL7 v2 (IHE PCD-01), mapped to
medmesh measures (vocabulary.py, which holds their LOINC codes) and to UCUM units.

Sources. Metric codes: the expansion of ISO/IEEE 11073-10101 in the FHIR value set
devicemetric-type (http://hl7.org/fhir/R4B/valueset-devicemetric-type.html), which lists every
code below with its reference id; 149530 -> LOINC 8867-4 as in the HL7 Personal Health Device
IG example Observation "spotnumeric-1.0.0.3". Unit codes: 262688 MDC_DIM_PERCENT from the HL7
PoCD IG value set 11073MDC-dimension and the FHIR DeviceMetric example; 264864
MDC_DIM_BEAT_PER_MIN and 266016 MDC_DIM_MMHG from the PCD-01 examples of the GE B40 monitor's
HL7 interface manual. Every unit code equals partition MDC_PART_DIM (4) x 65536 plus its 16-bit
11073 term code (PERCENT 544, BEAT_PER_MIN 2720, RESP_PER_MIN 2784, MMHG 3872, FAHR 4416,
DEGC 6048), which cross-checks the ones published only in vendor examples.
"""

from __future__ import annotations

from dataclasses import dataclass

MDC_SYSTEM = "urn:iso:std:iso:11073:10101"


@dataclass(frozen=True, slots=True)
class MdcMetric:
    """An MDC observation code and what it becomes: a measure, or one component of a panel."""

    code: str
    reference_id: str
    measure: str  # a vocabulary.py measure key
    component: str | None = None  # "systolic" / "diastolic" for blood-pressure parts


@dataclass(frozen=True, slots=True)
class MdcUnit:
    code: str
    reference_id: str
    ucum: str


METRICS: tuple[MdcMetric, ...] = (
    MdcMetric("147842", "MDC_ECG_HEART_RATE", "heart-rate"),
    MdcMetric("149530", "MDC_PULS_OXIM_PULS_RATE", "heart-rate"),
    MdcMetric("149546", "MDC_PULS_RATE_NON_INV", "heart-rate"),
    MdcMetric("150456", "MDC_PULS_OXIM_SAT_O2", "oxygen-saturation"),
    MdcMetric("150021", "MDC_PRESS_BLD_NONINV_SYS", "blood-pressure", "systolic"),
    MdcMetric("150022", "MDC_PRESS_BLD_NONINV_DIA", "blood-pressure", "diastolic"),
    MdcMetric("150301", "MDC_PRESS_CUFF_SYS", "blood-pressure", "systolic"),
    MdcMetric("150302", "MDC_PRESS_CUFF_DIA", "blood-pressure", "diastolic"),
    MdcMetric("150364", "MDC_TEMP_BODY", "body-temperature"),
    # Site unspecified; monitors send it for the patient temperature probe (e.g. GE B40).
    MdcMetric("150344", "MDC_TEMP", "body-temperature"),
    MdcMetric("151562", "MDC_RESP_RATE", "respiratory-rate"),
    MdcMetric("151578", "MDC_TTHOR_RESP_RATE", "respiratory-rate"),
    MdcMetric("151594", "MDC_CO2_RESP_RATE", "respiratory-rate"),
)

# Known and deliberately not stored: the mean arterial pressure that comes with every NIBP
# measurement (our blood-pressure panel is systolic and diastolic).
NOT_STORED: frozenset[str] = frozenset(
    {"150023", "MDC_PRESS_BLD_NONINV_MEAN", "150303", "MDC_PRESS_CUFF_MEAN"}
)

UNITS: tuple[MdcUnit, ...] = (
    MdcUnit("262688", "MDC_DIM_PERCENT", "%"),
    MdcUnit("264864", "MDC_DIM_BEAT_PER_MIN", "/min"),
    MdcUnit("264928", "MDC_DIM_RESP_PER_MIN", "/min"),
    MdcUnit("266016", "MDC_DIM_MMHG", "mm[Hg]"),
    MdcUnit("266560", "MDC_DIM_FAHR", "[degF]"),
    MdcUnit("268192", "MDC_DIM_DEGC", "Cel"),
)

_METRICS: dict[str, MdcMetric] = {}
for _m in METRICS:
    _METRICS[_m.code] = _METRICS[_m.reference_id] = _m
_UNITS: dict[str, MdcUnit] = {}
for _u in UNITS:
    _UNITS[_u.code] = _UNITS[_u.reference_id] = _u


def metric(code: str, reference_id: str = "") -> MdcMetric | None:
    """The metric for a numeric MDC code, or failing that its reference id (MDC_...)."""
    return _METRICS.get(code) or (_METRICS.get(reference_id) if reference_id else None)


def is_not_stored(code: str, reference_id: str = "") -> bool:
    """A code medmesh knows and skips on purpose (not an error)."""
    return code in NOT_STORED or reference_id in NOT_STORED


def unit(code: str, reference_id: str = "") -> MdcUnit | None:
    """The unit for a numeric MDC dimension code, or failing that its reference id."""
    return _UNITS.get(code) or (_UNITS.get(reference_id) if reference_id else None)


def ucum(code: str, text: str = "", coding_system: str = "") -> str | None:
    """The UCUM unit of an HL7 units field (CWE code^text^system): an MDC unit, or a unit the
    sender itself codes as UCUM."""
    known = unit(code, text)
    if known is not None:
        return known.ucum
    return code if code and coding_system.upper() == "UCUM" else None
