"""Tools of the `unseen` task suite: ten small tool families that no training data contains (aquariums,
telescopes, a winery, a ski resort, beehives, a marina, a tailor, dog boarding, a climbing gym, a print shop),
written as a user writes their own tools, with deterministic in-memory backends. Unknown keys return an error
object. Each family's set (`AQUARIUM`, ...) offers its tools, two of another family and the calculator; `TOOLS`
holds every tool.
"""
from __future__ import annotations

from typing import Literal

from .core import ToolSet, tool
from .demo import calculator

# --- aquarium ---------------------------------------------------------------------------------------------------

_TANKS = {
    "TK-03": {"exhibit": "Coral Reef", "surface": (25.8, 8.2), "bottom": (24.9, 8.1), "fish": 412, "species": 38},
    "TK-07": {"exhibit": "Kelp Forest", "surface": (14.2, 8.0), "bottom": (12.6, 7.9), "fish": 265, "species": 21},
    "TK-12": {"exhibit": "Shark Lagoon", "surface": (23.1, 8.1), "bottom": (22.4, 8.1), "fish": 57, "species": 9},
    "TK-15": {"exhibit": "Jelly Gallery", "surface": (18.5, 7.8), "bottom": (17.9, 7.8), "fish": 1340, "species": 6},
    "TK-21": {"exhibit": "Mangrove Pool", "surface": (27.4, 7.6), "bottom": (26.8, 7.5), "fish": 198, "species": 17},
}


def _tank(tank_id: str):
    return _TANKS.get(tank_id.strip().upper())


@tool
def tank_reading(tank_id: str, probe: Literal["surface", "bottom"] = "surface") -> dict:
    """Latest water temperature (°C) and pH of an aquarium tank.

    Args:
        tank_id: Tank code, e.g. "TK-99".
        probe: Which sensor: surface or bottom (default surface).
    """
    t = _tank(tank_id)
    if t is None:
        return {"error": f"unknown tank {tank_id!r}"}
    temp, ph = t[probe]
    return {"tank_id": tank_id.strip().upper(), "probe": probe, "water_temp_c": temp, "ph": ph}


@tool
def getFishCount(tank_id: str) -> dict:
    """How many fish, and how many species, live in a tank.

    Args:
        tank_id: The tank's code (like "TK-50").
    """
    t = _tank(tank_id)
    if t is None:
        return {"error": f"unknown tank {tank_id!r}"}
    return {"tank_id": tank_id.strip().upper(), "fish_count": t["fish"], "species_count": t["species"]}


@tool
def find_tank(exhibit_name: str) -> dict:
    """Find the tank code of an exhibit by its name.

    Args:
        exhibit_name: Exhibit name, e.g. "Penguin Beach".
    """
    for code, t in _TANKS.items():
        if t["exhibit"].lower() == exhibit_name.strip().lower():
            return {"tank_id": code, "exhibit_name": t["exhibit"]}
    return {"error": f"no exhibit named {exhibit_name!r}"}


# --- observatory --------------------------------------------------------------------------------------------------

_SCOPES = {"SCOPE-1": (406, 3), "SCOPE-2": (254, 0), "SCOPE-3": (1020, 7), "SCOPE-4": (152, 1)}
_SKY = {("ridge", "tonight"): (12, 0.9), ("ridge", "tomorrow"): (64, 1.6), ("valley", "tonight"): (35, 1.4),
        ("valley", "tomorrow"): (80, 2.1)}


@tool
def telescopeStatus(scope: str) -> dict:
    """Aperture (mm) and the number of observation requests queued for a telescope.

    Args:
        scope: Telescope name such as "SCOPE-9".
    """
    s = _SCOPES.get(scope.strip().upper())
    if s is None:
        return {"error": f"unknown telescope {scope!r}"}
    return {"scope": scope.strip().upper(), "aperture_mm": s[0], "queued_requests": s[1]}


@tool
def night_sky_forecast(site: Literal["ridge", "valley"] = "ridge",
                       night: Literal["tonight", "tomorrow"] = "tonight") -> dict:
    """Cloud cover (%) and seeing (arcseconds) forecast at an observing site.

    Args:
        site: ridge or valley; ridge if not given.
        night: tonight (default) or tomorrow.
    """
    cloud, seeing = _SKY[(site, night)]
    return {"site": site, "night": night, "cloud_cover_pct": cloud, "seeing_arcsec": seeing}


# --- winery -------------------------------------------------------------------------------------------------------

_BARRELS = {
    "BRL-118": {"wine": "Hillside Syrah", "liters": 225, "vintage": 2021, "grape": "Syrah"},
    "BRL-204": {"wine": "Old Vine Zinfandel", "liters": 300, "vintage": 2019, "grape": "Zinfandel"},
    "BRL-311": {"wine": "River Chardonnay", "liters": 228, "vintage": 2022, "grape": "Chardonnay"},
    "BRL-415": {"wine": "Reserve Pinot", "liters": 114, "vintage": 2020, "grape": "Pinot Noir"},
}
_CELLARS = {"north": (12.5, 78), "south": (14.0, 71)}


@tool
def barrel_info(barrel_no: str) -> dict:
    """Wine, grape, vintage and volume (liters) held in a barrel.

    Args:
        barrel_no: Barrel number, for example "BRL-900".
    """
    b = _BARRELS.get(barrel_no.strip().upper())
    if b is None:
        return {"error": f"no barrel {barrel_no!r}"}
    return {"barrel_no": barrel_no.strip().upper(), **b}


@tool
def cellarClimate(cellar: Literal["north", "south"] = "north") -> dict:
    """Current temperature (°C) and humidity (%) in a wine cellar.

    Args:
        cellar: north (default) or south.
    """
    temp, hum = _CELLARS[cellar]
    return {"cellar": cellar, "temp_c": temp, "humidity_pct": hum}


@tool
def barrel_for_wine(wine_name: str) -> dict:
    """The barrel number that holds a wine, by the wine's name.

    Args:
        wine_name: Name of the wine, e.g. "Valley Merlot".
    """
    for code, b in _BARRELS.items():
        if b["wine"].lower() == wine_name.strip().lower():
            return {"barrel_no": code, "wine": b["wine"]}
    return {"error": f"no wine named {wine_name!r}"}


# --- ski resort ---------------------------------------------------------------------------------------------------

_LIFTS = {"LIFT-A": (4, True), "LIFT-B": (17, True), "LIFT-C": (0, False), "LIFT-D": (9, True)}
_SLOPES = {"eagle run": (142, "groomed"), "fox bowl": (188, "powder"), "pine glade": (96, "moguls")}


@tool
def lift_wait(lift: str) -> dict:
    """Current queue time in minutes at a ski lift, and whether it is open.

    Args:
        lift: The lift code, e.g. "LIFT-Z".
    """
    x = _LIFTS.get(lift.strip().upper())
    if x is None:
        return {"error": f"unknown lift {lift!r}"}
    return {"lift": lift.strip().upper(), "wait_minutes": x[0], "open": x[1]}


@tool
def slopeConditions(slope_name: str, unit: Literal["cm", "in"] = "cm") -> dict:
    """Snow depth and surface on a ski slope.

    Args:
        slope_name: Slope name like "Wolf Ridge".
        unit: Depth unit, cm (default) or in.
    """
    s = _SLOPES.get(slope_name.strip().lower())
    if s is None:
        return {"error": f"no slope named {slope_name!r}"}
    depth = s[0] if unit == "cm" else round(s[0] / 2.54, 1)
    return {"slope": slope_name.strip().title(), "snow_depth": depth, "unit": unit, "surface": s[1]}


# --- apiary -------------------------------------------------------------------------------------------------------

_HIVES = {"HIVE-14": (38.6, 9, 12.5, 21.0), "HIVE-22": (44.1, 10, 15.0, 26.4), "HIVE-31": (29.3, 7, 8.2, 13.9),
          "HIVE-40": (35.7, 8, 11.1, 18.6)}


@tool
def hive_weight(hive_id: str) -> dict:
    """Weight (kg) of a beehive and the number of frames in it.

    Args:
        hive_id: Hive identifier, e.g. "HIVE-77".
    """
    h = _HIVES.get(hive_id.strip().upper())
    if h is None:
        return {"error": f"unknown hive {hive_id!r}"}
    return {"hive_id": hive_id.strip().upper(), "weight_kg": h[0], "frames": h[1]}


@tool
def honeyHarvest(hive_id: str, season: Literal["spring", "summer"] = "summer") -> dict:
    """Honey harvested from a hive in a season, in kg.

    Args:
        hive_id: Which hive (like "HIVE-70").
        season: spring or summer; defaults to summer.
    """
    h = _HIVES.get(hive_id.strip().upper())
    if h is None:
        return {"error": f"unknown hive {hive_id!r}"}
    return {"hive_id": hive_id.strip().upper(), "season": season, "honey_kg": h[2] if season == "spring" else h[3]}


# --- marina -------------------------------------------------------------------------------------------------------

_BERTHS = {"B-07": (9.5, "Sea Breeze", 32.0), "B-12": (12.0, "Blue Heron", 41.5), "B-22": (15.5, "Northern Star", 58.0),
           "B-31": (8.0, "Little Gull", 27.5)}


@tool
def berth_lookup(berth: str) -> dict:
    """Length (m) of a marina berth and the boat moored in it.

    Args:
        berth: Berth number, e.g. "B-99".
    """
    b = _BERTHS.get(berth.strip().upper())
    if b is None:
        return {"error": f"unknown berth {berth!r}"}
    return {"berth": berth.strip().upper(), "length_m": b[0], "boat": b[1]}


@tool
def mooringFee(berth: str, nights: int) -> dict:
    """The mooring fee in EUR for a number of nights at a berth.

    Args:
        berth: Berth number (for example "B-50").
        nights: How many nights, e.g. 3.
    """
    b = _BERTHS.get(berth.strip().upper())
    if b is None:
        return {"error": f"unknown berth {berth!r}"}
    return {"berth": berth.strip().upper(), "nights": nights, "fee_eur": round(b[2] * nights, 2)}


# --- tailor -------------------------------------------------------------------------------------------------------

_TICKETS = {"TL-3301": ("hemming", "sewing", 2, 18.0), "TL-3342": ("suit fitting", "pressing", 1, 65.0),
            "TL-3388": ("zip repair", "queued", 4, 22.5), "TL-3410": ("dress taking in", "ready", 0, 48.0)}


@tool
def alteration_status(ticket: str) -> dict:
    """Stage of a tailoring job and days until it is ready.

    Args:
        ticket: Job ticket, e.g. "TL-1000".
    """
    t = _TICKETS.get(ticket.strip().upper())
    if t is None:
        return {"error": f"unknown ticket {ticket!r}"}
    return {"ticket": ticket.strip().upper(), "job": t[0], "stage": t[1], "ready_in_days": t[2]}


@tool
def getAlterationPrice(ticket: str, express: bool = False) -> dict:
    """Price in USD of a tailoring job; express service costs 1.5 times as much.

    Args:
        ticket: Job ticket like "TL-2000".
        express: true for express service (default false).
    """
    t = _TICKETS.get(ticket.strip().upper())
    if t is None:
        return {"error": f"unknown ticket {ticket!r}"}
    return {"ticket": ticket.strip().upper(), "express": express, "price_usd": t[3] * (1.5 if express else 1)}


# --- dog boarding -------------------------------------------------------------------------------------------------

_DOGS = {"DOG-58": ("Biscuit", 12.4, 5, 240), "DOG-61": ("Juno", 31.0, 2, 520), "DOG-73": ("Pepper", 7.8, 9, 150),
         "DOG-80": ("Atlas", 41.5, 3, 680)}


@tool
def boarder_profile(dog_id: str) -> dict:
    """Name, weight (kg) and nights booked for a dog staying at the kennel.

    Args:
        dog_id: Boarding ID, e.g. "DOG-10".
    """
    d = _DOGS.get(dog_id.strip().upper())
    if d is None:
        return {"error": f"unknown boarder {dog_id!r}"}
    return {"dog_id": dog_id.strip().upper(), "name": d[0], "weight_kg": d[1], "nights_booked": d[2]}


@tool
def findBoarder(dog_name: str) -> dict:
    """Look up a boarding dog's ID by its name.

    Args:
        dog_name: The dog's name, e.g. "Rex".
    """
    for code, d in _DOGS.items():
        if d[0].lower() == dog_name.strip().lower():
            return {"dog_id": code, "name": d[0]}
    return {"error": f"no dog named {dog_name!r}"}


@tool
def daily_food_grams(dog_id: str) -> dict:
    """Grams of food a boarding dog gets per day.

    Args:
        dog_id: Boarding ID like "DOG-11".
    """
    d = _DOGS.get(dog_id.strip().upper())
    if d is None:
        return {"error": f"unknown boarder {dog_id!r}"}
    return {"dog_id": dog_id.strip().upper(), "food_g_per_day": d[3]}


# --- climbing gym -------------------------------------------------------------------------------------------------

_ROUTES = {"RT-409": ("6b+", 14.5, 312), "RT-412": ("7a", 16.0, 98), "RT-420": ("5c", 11.0, 870),
           "RT-433": ("6c", 15.5, 204)}
_WALLS = {"boulder": (23, 60), "lead": (11, 30), "kids": (6, 20)}


@tool
def route_grade(route_id: str) -> dict:
    """Grade, height (m) and number of logged ascents of a climbing route.

    Args:
        route_id: Route number, e.g. "RT-100".
    """
    r = _ROUTES.get(route_id.strip().upper())
    if r is None:
        return {"error": f"unknown route {route_id!r}"}
    return {"route_id": route_id.strip().upper(), "grade": r[0], "height_m": r[1], "ascents": r[2]}


@tool
def wallOccupancy(wall: Literal["boulder", "lead", "kids"] = "boulder") -> dict:
    """Climbers on a wall right now and the wall's capacity.

    Args:
        wall: boulder (default), lead or kids.
    """
    now, cap = _WALLS[wall]
    return {"wall": wall, "climbers_now": now, "capacity": cap}


# --- print shop ---------------------------------------------------------------------------------------------------

_JOBS = {"PJ-7781": (24, 150, "printing"), "PJ-7790": (8, 500, "queued"), "PJ-7802": (120, 12, "binding"),
         "PJ-7815": (2, 2000, "done")}


@tool
def print_job(job_id: str) -> dict:
    """Pages, copies and status of a print job.

    Args:
        job_id: Job number, e.g. "PJ-1234".
    """
    j = _JOBS.get(job_id.strip().upper())
    if j is None:
        return {"error": f"unknown print job {job_id!r}"}
    return {"job_id": job_id.strip().upper(), "pages": j[0], "copies": j[1], "status": j[2]}


@tool
def quotePrintRun(pages: int, copies: int, color: Literal["bw", "color"] = "bw") -> dict:
    """Price in USD for printing copies of a document: 0.04 per black-and-white page, 0.15 per color page.

    Args:
        pages: Pages per copy, e.g. 10.
        copies: Number of copies, e.g. 100.
        color: bw (default) or color.
    """
    rate = 0.04 if color == "bw" else 0.15
    return {"pages": pages, "copies": copies, "color": color, "price_usd": round(pages * copies * rate, 2)}


# --- the suite's tool sets ----------------------------------------------------------------------------------------

FAMILIES = {
    "aquarium": [tank_reading, getFishCount, find_tank],
    "observatory": [telescopeStatus, night_sky_forecast],
    "winery": [barrel_info, cellarClimate, barrel_for_wine],
    "ski_resort": [lift_wait, slopeConditions],
    "apiary": [hive_weight, honeyHarvest],
    "marina": [berth_lookup, mooringFee],
    "tailor": [alteration_status, getAlterationPrice],
    "kennel": [boarder_profile, findBoarder, daily_food_grams],
    "climbing_gym": [route_grade, wallOccupancy],
    "print_shop": [print_job, quotePrintRun],
}
# each family's set: its tools, two tools of the next family (distractors) and the calculator
_ORDER = list(FAMILIES)


def _set(family: str) -> ToolSet:
    other = FAMILIES[_ORDER[(_ORDER.index(family) + 1) % len(_ORDER)]][:2]
    return ToolSet([*FAMILIES[family], *other, calculator])


AQUARIUM, OBSERVATORY, WINERY, SKI_RESORT, APIARY, MARINA, TAILOR, KENNEL, CLIMBING_GYM, PRINT_SHOP = (
    _set(f) for f in _ORDER)
TOOLS = ToolSet([t for ts in FAMILIES.values() for t in ts] + [calculator])
