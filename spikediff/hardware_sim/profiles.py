"""Named hardware profiles: TOML data files in ``profiles/``, every number with its unit, its bounds and its source.

A quantity is ``value`` with ``low`` and ``high`` (what the sources allow; the cost model reports every total at
the values and between the bounds) and a ``source`` (a publication, a measurement, or "assumption" with the
reasoning behind the bounds). A user's file may leave out ``low`` and ``high``: the number is then taken as
exact. A profile gives only what is known for that hardware; the cost model leaves out what a profile lacks
(the 45 nm AC/MAC convention, for instance, has no neuron-update or static energy). Users can load their
own file or override single numbers; an override is exact and recorded as the number's source.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .. import SpikediffError

#: every quantity a profile may give, with the unit its file must state
UNITS = {
    "synaptic_op_energy": "pJ", "mac_energy": "pJ",
    "neuron_update_energy_active": "pJ", "neuron_update_energy_inactive": "pJ",
    "spike_energy_within_tile": "pJ", "hop_energy_east_west": "pJ", "hop_energy_north_south": "pJ",
    "synaptic_op_time": "ns", "neuron_update_time_active": "ns", "neuron_update_time_inactive": "ns",
    "spike_time_within_tile": "ns", "hop_time_east_west": "ns", "hop_time_north_south": "ns",
    "barrier_sync_time_one_tile": "ns", "barrier_sync_time_full_chip": "ns",
    "graded_synaptic_op_energy": "pJ", "input_message_energy": "pJ",
    "chip_to_chip_energy": "pJ", "chip_to_chip_time": "ns",
    "static_power": "W",
    "cores_per_chip": "cores", "cores_per_tile": "cores", "tiles_per_row": "tiles",
    "max_neurons_per_core": "neurons", "synaptic_memory_per_core": "bytes", "neuron_state_bytes": "bytes",
    "bits_per_synapse": "bits", "max_fan_in_axons_per_core": "axons", "max_fan_out_axons_per_core": "axons",
    "memory_per_core": "bytes", "bits_per_weight": "bits", "synapse_row_bits": "bits",
    "axon_in_bytes": "bytes", "axon_out_bytes": "bytes", "conv_kernel_shared": "flag",
}
CHIP_KEYS = ("cores_per_chip", "max_neurons_per_core")  # a profile that maps onto cores needs at least these
COUNT_UNITS = ("cores", "tiles", "neurons", "axons", "bits")  # a whole number, at least one (divisors, capacities)
ZERO_COUNTS = ("synapse_row_bits",)  # counts that may be zero (no header at all)
#: quantities that set the mapping (held at their values; their bounds are documented, not propagated)
MAPPING_UNITS = COUNT_UNITS + ("bytes", "flag")


def check_value(where: str, key: str, value, field_name: str = "value") -> float:
    """A quantity's value (or bound) as a float, or a one-line error: every number finite and >= 0 (energies,
    times, power, bytes), counts whole numbers >= 1 (a NaN or negative number would pass into every total)."""
    import math

    what = f"quantity {key!r}" + ("" if field_name == "value" else f" ({field_name})")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpikediffError(f"{where}: {what} must be a finite number, got {value!r}")
    if value < 0:
        raise SpikediffError(f"{where}: {what} must be >= 0, got {value!r}")
    unit = UNITS.get(key)
    if unit in COUNT_UNITS and (value < (0 if key in ZERO_COUNTS else 1) or value != int(value)):
        raise SpikediffError(f"{where}: {what} counts {unit}: a whole number >= 1, got {value!r}")
    if unit == "bytes" and value != int(value):
        raise SpikediffError(f"{where}: {what} counts bytes: a whole number, got {value!r}")
    if unit == "flag" and value not in (0, 1):
        raise SpikediffError(f"{where}: {what} is a flag: 0 or 1, got {value!r}")
    return float(value)


@dataclass
class Quantity:
    value: float
    unit: str
    source: str
    low: float | None = None  # None: exact (low = high = value)
    high: float | None = None

    def __post_init__(self):
        self.low = self.value if self.low is None else self.low
        self.high = self.value if self.high is None else self.high

    @property
    def priced(self) -> bool:
        """Whether the quantity is a price (energy, time, power) rather than a resource that sets the mapping."""
        return self.unit not in MAPPING_UNITS


@dataclass
class Profile:
    name: str
    title: str
    quantities: dict = field(default_factory=dict)  # key -> Quantity
    path: str = ""

    def __contains__(self, key: str) -> bool:
        return key in self.quantities

    def get(self, key: str, default=None):
        q = self.quantities.get(key)
        return default if q is None else q.value

    def values(self, at: str = "value") -> dict:
        """{key: number} of every quantity at its ``value``, ``low`` or ``high`` (mapping quantities stay at
        their values)."""
        return {k: (getattr(q, at) if q.priced else q.value) for k, q in self.quantities.items()}

    def uncertain(self) -> list:
        """The priced quantities whose bounds differ from their value."""
        return [k for k, q in self.quantities.items() if q.priced and (q.low != q.value or q.high != q.value)]

    @property
    def is_chip(self) -> bool:
        return all(k in self for k in CHIP_KEYS)

    def with_overrides(self, overrides: dict) -> Profile:
        """A copy with ``{key: value}`` replaced (source: "user override")."""
        out = Profile(self.name, self.title, dict(self.quantities), self.path)
        for key, value in overrides.items():
            if key not in UNITS:
                raise SpikediffError(f"profile {self.name}: unknown quantity {key!r} (known: {', '.join(sorted(UNITS))})")
            out.quantities[key] = Quantity(check_value(f"profile {self.name}", key, value), UNITS[key],
                                           "user override")  # exact: low = high = value
        return out

    def to_dict(self) -> dict:
        """Every quantity as value, unit, source, and low and high where they differ from the value."""
        def one(q):
            bounds = {} if q.low == q.high == q.value else {"low": q.low, "high": q.high}
            return {"value": q.value, **bounds, "unit": q.unit, "source": q.source}

        return {"name": self.name, "title": self.title, "quantities": {k: one(q) for k, q in self.quantities.items()}}


def builtin_names() -> list:
    return sorted(p.name[:-5] for p in resources.files(__package__).joinpath("profiles").iterdir()
                  if p.name.endswith(".toml"))


def load_profile(name_or_path: str) -> Profile:
    """A built-in profile by name (``builtin_names()``) or a TOML file of the same form."""
    path = Path(name_or_path)
    if name_or_path in builtin_names():
        text = resources.files(__package__).joinpath("profiles", f"{name_or_path}.toml").read_text()
        where = f"built-in profile {name_or_path}"
    elif path.suffix == ".toml" and path.exists():
        from ..atomic import read_regular

        raw, where = read_regular(path, "hardware profile"), str(path)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SpikediffError(f"{where}: not a UTF-8 text file") from None
    else:
        raise SpikediffError(f"hardware profile {name_or_path!r}: not a built-in profile ({', '.join(builtin_names())}) "
                             f"nor a .toml file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpikediffError(f"{where}: not valid TOML ({exc})") from None
    quantities = {}
    if not isinstance(data.get("quantity", {}), dict):
        raise SpikediffError(f"{where}: 'quantity' must be a table of quantities")
    for key, q in (data.get("quantity") or {}).items():
        if key not in UNITS:
            raise SpikediffError(f"{where}: unknown quantity {key!r} (known: {', '.join(sorted(UNITS))})")
        if not isinstance(q, dict) or not {"value", "unit", "source"} <= set(q):
            raise SpikediffError(f"{where}: quantity {key!r} needs value, unit and source")
        if q["unit"] != UNITS[key]:
            raise SpikediffError(f"{where}: quantity {key!r} must be in {UNITS[key]}, got {q['unit']!r}")
        value = check_value(where, key, q["value"])
        low = check_value(where, key, q["low"], "low") if "low" in q else value
        high = check_value(where, key, q["high"], "high") if "high" in q else value
        if not low <= value <= high:
            raise SpikediffError(f"{where}: quantity {key!r} needs low <= value <= high, got {low:g}, {value:g}, "
                                 f"{high:g}")
        if not str(q["source"]).strip():
            raise SpikediffError(f"{where}: quantity {key!r} has an empty source")
        quantities[key] = Quantity(value, q["unit"], str(q["source"]), low, high)
    if "name" not in data:
        raise SpikediffError(f"{where}: missing 'name'")
    if not isinstance(data["name"], str) or not data["name"].strip():
        raise SpikediffError(f"{where}: 'name' must be a non-empty string")
    return Profile(str(data["name"]), str(data.get("title", data["name"])), quantities, where)


def parse_overrides(items: list) -> dict:
    """``["loihi2.static_power=0.3", ...]`` -> ``{"loihi2": {"static_power": 0.3}}``."""
    out: dict = {}
    for item in items or []:
        target, sep, value = item.partition("=")
        profile, dot, key = target.partition(".")
        if not sep or not dot:
            raise SpikediffError(f"--set {item!r}: expected PROFILE.QUANTITY=VALUE, e.g. loihi2.static_power=0.3")
        try:
            number = float(value)
        except ValueError:
            raise SpikediffError(f"--set {item!r}: {value!r} is not a number") from None
        if key not in UNITS:
            raise SpikediffError(f"--set {item!r}: unknown quantity {key!r} (known: {', '.join(sorted(UNITS))})")
        out.setdefault(profile, {})[key] = check_value(f"--set {item}", key, number)
    return out
