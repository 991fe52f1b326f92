"""A world of synthetic tools for tool-agnostic training: hundreds of tools in 40 domains, each a real
`umi_edge.tools.Tool` with a deterministic simulated backend.

A domain (a tool *family*) is a table of entities (ids like "A-1042", display names, numeric and text fields)
and the functions over it: a lookup per group of fields (one of them takes an enum option with a default), a
finder that maps a display name to the id, and sometimes a computed quote (a field times a quantity). Each
function is rendered as two or three *variants* (tool name in snake_case / camelCase, verb-first or
noun-first; description wording; argument names; an example value in the argument's description that never
names a real entity), so the same function reaches the model under different docs. Unknown ids or names
return an error object, not an exception.

Families are split: `TRAIN_FAMILIES` feed training episodes, `VALID_FAMILIES` only the validation suite; the
shipped `unseen` suite (`umi_edge/tools/unseen.py`) uses families defined elsewhere and in neither list.

    import toolworld
    toolworld.TOOLS                       # every variant, a ToolSet (name -> Tool)
    toolworld.FAMILIES["inventory"]       # a Family: .functions, .tools (its variants), .entities
    toolworld.family_of("getProductStock")
    toolworld.offered("getProductStock,calculator")   # a ToolSet of named world (or demo) tools
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from umi_edge.tools import Tool, ToolSet
from umi_edge.tools.demo import TOOLS as DEMO_TOOLS

# --- the domain specs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class F:
    """A field: its record key, how people name it (first = the canonical words), its unit, and its values."""
    key: str
    words: tuple[str, ...]
    unit: str = ""                     # written after the value in answers ("units", "USD", "kg", "%")
    lo: float = 0
    hi: float = 100
    dec: int = 0                       # decimals (0: integers)
    choices: tuple[str, ...] = ()      # a text field's values


@dataclass(frozen=True)
class Opt:
    """An enum argument of a family's first lookup: names it may take, its values (first = default), how a
    query says it ("in the {} warehouse")."""
    args: tuple[str, ...]
    values: tuple[str, ...]
    phrase: str


@dataclass(frozen=True)
class Quote:
    """A computed function: `field` × a quantity argument, returned as `key`."""
    noun: str
    field: str
    qty_args: tuple[str, ...]
    qty_words: str                     # "units", "nights"
    key: str
    words: str                         # "total cost"
    unit: str


@dataclass(frozen=True)
class Spec:
    family: str
    entity: str                        # "product"
    id_pattern: str                    # "#": digit, "@": capital letter, else literal
    id_args: tuple[str, ...]           # the key argument's possible names
    id_word: str                       # how a description names the key ("product code")
    groups: tuple[tuple[str, tuple[F, ...]], ...]   # (noun for the tool name, fields) per lookup function
    names: tuple[str, ...] = ()        # display names (a finder exists when there are some)
    name_args: tuple[str, ...] = ("name",)
    option: Opt | None = None
    quote: Quote | None = None


def _f(key, words, unit="", lo=0, hi=100, dec=0):
    return F(key, tuple(words.split("|")), unit, lo, hi, dec)


def _t(key, words, choices):
    return F(key, tuple(words.split("|")), choices=tuple(choices.split("|")))


SPECS: tuple[Spec, ...] = (
    Spec("inventory", "product", "@-####", ("sku", "product_code", "item_id"), "product code",
         (("stock", (_f("units_in_stock", "stock level|units in stock|stock count", "units", 0, 2500),
                     _f("reorder_level", "reorder level|reorder point", "units", 10, 300))),
          ("price", (_f("unit_price", "unit price|price per unit|price", "USD", 2, 400, 2),
                     _f("weight_kg", "shipping weight|weight", "kg", 0.1, 40, 2)))),
         names=("Widget Pro", "Gear Clamp", "Steel Hinge", "Cable Kit", "Desk Lamp", "Pocket Drill", "Solar Fan",
                "Hex Bolt Set", "Glass Jar", "Trail Bottle", "Copper Wire", "Foam Roller"),
         name_args=("product_name", "name"), option=Opt(("warehouse", "site"), ("main", "north", "east"),
                                                        "in the {} warehouse"),
         quote=Quote("order_cost", "unit_price", ("quantity", "qty"), "units", "total_usd", "total cost", "USD")),
    Spec("flights", "flight", "@@-###", ("flight_number", "flight", "flight_code"), "flight number",
         (("status", (_f("delay_minutes", "delay|expected delay", "minutes", 0, 240),
                      _t("gate", "departure gate|gate", "A4|B12|C7|D21|E3|F9|G15"))),
          ("seats", (_f("seats_left", "free seats|seats left|open seats", "seats", 0, 180),
                     _f("fare_eur", "fare|ticket price", "EUR", 39, 1400, 2)))),
         option=Opt(("cabin", "travel_class"), ("economy", "premium", "business"), "in {} class")),
    Spec("weather", "city", "", ("city", "location", "place"), "city name",
         (("weather", (_f("temperature_c", "temperature|current temperature", "°C", -15, 38, 1),
                       _f("humidity_pct", "humidity|relative humidity", "%", 10, 100))),
          ("wind", (_f("wind_kmh", "wind speed|wind", "km/h", 0, 90, 1),
                    _f("rain_mm", "rainfall|expected rain", "mm", 0, 60, 1)))),
         names=("Porto", "Graz", "Tromso", "Bergamo", "Leeds", "Utrecht", "Nantes", "Gdansk", "Kobe", "Perth",
                "Quebec", "Cusco"),
         option=Opt(("day", "when"), ("today", "tomorrow"), "{}")),
    Spec("hr_directory", "employee", "E-####", ("employee_id", "staff_id", "emp_id"), "employee ID",
         (("office", (_t("office_room", "office room|office", "2.14|3.02|4.11|1.07|5.20|2.31"),
                      _f("phone_extension", "phone extension|extension", "", 1000, 9999))),
          ("leave", (_f("vacation_days_left", "vacation days left|remaining vacation days", "days", 0, 30),
                     _f("sick_days_taken", "sick days taken|sick days", "days", 0, 15)))),
         names=("Dana Whitfield", "Omar Haddad", "Lena Ortiz", "Kai Nakamura", "Priya Raman", "Tom Becker",
                "Sara Lindqvist", "Ivan Petrov", "Mia Rossi", "Noah Clarke", "Aisha Bello", "Jonas Weber"),
         name_args=("full_name", "name")),
    Spec("orders", "order", "ORD-#####", ("order_id", "order_number", "orderRef"), "order number",
         (("order", (_f("item_count", "number of items|item count", "items", 1, 40),
                     _f("total_usd", "order total|total amount", "USD", 5, 3000, 2))),
          ("delivery", (_t("delivery_status", "delivery status|status", "packed|shipped|in transit|delivered"),
                        _f("days_to_delivery", "days until delivery|delivery time", "days", 0, 14))))),
    Spec("meeting_rooms", "meeting room", "R-###", ("room_id", "room_code", "room"), "room code",
         (("room", (_f("capacity", "capacity|number of seats", "people", 2, 60),
                    _f("floor", "floor", "", 1, 12))),
          ("booking", (_f("free_hours_today", "free hours today|hours free today", "hours", 0, 9),
                       _f("hourly_rate", "hourly rate|price per hour", "USD", 10, 150)))),
         names=("Maple Room", "Orion Room", "Harbor Suite", "Cedar Hall", "Atlas Room", "Birch Room", "Lumen Lab",
                "Summit Room", "Delta Room", "Nova Hall"), name_args=("room_name", "name")),
    Spec("fx_rates", "currency", "@@@", ("currency", "currency_code", "ccy"), "currency code",
         (("rate", (_f("rate_per_usd", "exchange rate per US dollar|rate against the dollar|exchange rate", "", 0.2,
                       150, 4),
                    _f("weekly_change_pct", "weekly change|change this week", "%", -4, 4, 2))),),
         quote=Quote("convert_amount", "rate_per_usd", ("amount_usd", "usd"), "US dollars", "converted",
                     "converted amount", "")),
    Spec("recipes", "recipe", "RC-###", ("recipe_id", "recipe", "dish_id"), "recipe ID",
         (("nutrition", (_f("calories_per_serving", "calories per serving|calories", "kcal", 80, 1200),
                         _f("protein_g", "protein per serving|protein", "g", 1, 60))),
          ("timing", (_f("prep_minutes", "preparation time|prep time", "minutes", 5, 180),
                      _f("servings", "servings|number of servings", "", 1, 12)))),
         names=("Lemon Risotto", "Bean Chili", "Pumpkin Soup", "Tofu Curry", "Apple Crumble", "Lentil Stew",
                "Herb Omelette", "Pad Thai", "Fig Tart", "Miso Ramen"), name_args=("title", "recipe_name")),
    Spec("smart_devices", "device", "DEV-@#@#", ("device_id", "device", "serial"), "device ID",
         (("status", (_f("battery_pct", "battery level|battery", "%", 0, 100),
                      _f("signal_dbm", "signal strength|signal", "dBm", -95, -40))),
          ("firmware", (_t("firmware_version", "firmware version|firmware", "4.2.1|3.9.0|5.0.2|2.7.4"),
                        _f("days_since_update", "days since the last update|days since update", "days", 0, 400)))),
         names=("Hall Sensor", "Garden Cam", "Attic Hub", "Porch Light", "Baby Monitor", "Shed Lock", "Pool Pump",
                "Kitchen Plug"), name_args=("label", "device_name")),
    Spec("crm", "customer account", "C-#####", ("account_id", "customer_id", "acct"), "account ID",
         (("deals", (_f("open_deals", "open deals|number of open deals", "", 0, 25),
                     _f("pipeline_usd", "pipeline value|deal pipeline", "USD", 0, 900000))),
          ("account", (_f("lifetime_value_usd", "lifetime value|customer lifetime value", "USD", 500, 2000000),
                       _t("account_manager", "account manager|owner", "Ruth Adler|Marco Neri|Jin Park|Ola Nordmann")))),
         names=("Northwind Foods", "Bluecrest Labs", "Orbit Media", "Kestrel Tools", "Vantage Farms",
                "Halcyon Travel", "Redwood Legal", "Tidal Energy", "Pinecone Games", "Summit Dental"),
         name_args=("company", "account_name")),
    Spec("sports", "team", "T-###", ("team_id", "club_id", "team"), "team ID",
         (("standings", (_f("wins", "wins|number of wins", "", 0, 30),
                         _f("losses", "losses|number of losses", "", 0, 30))),
          ("scoring", (_f("goals_scored", "goals scored|goals", "", 5, 90),
                       _f("points", "points|league points", "", 0, 90)))),
         names=("Rivertown Rovers", "Hilltop United", "Bay City FC", "Granite Rangers", "Lakeside Wolves",
                "Iron Valley", "Westport Owls", "Coastal Stars"), name_args=("team_name", "club"),
         option=Opt(("season", "year"), ("2024", "2023", "2022"), "in the {} season")),
    Spec("library", "book", "BK-#####", ("book_id", "catalog_number", "item"), "catalog number",
         (("loans", (_f("copies_available", "available copies|copies on the shelf|copies available", "copies", 0, 12),
                     _f("holds", "holds|people on the waiting list", "", 0, 30))),
          ("details", (_f("pages", "page count|number of pages", "pages", 60, 1100),
                       _f("loan_days", "loan period|loan length", "days", 7, 28)))),
         names=("The Silent Harbor", "Paper Moons", "A Winter Map", "Glass Rivers", "The Long Orchard",
                "Copper Skies", "Night Ferry", "The Salt Road", "Quiet Engines", "North of Nowhere"),
         name_args=("title", "book_title"), option=Opt(("branch", "location"), ("central", "east", "west"),
                                                       "at the {} branch")),
    Spec("transit", "stop", "S-####", ("stop_id", "stop_code", "stop"), "stop code",
         (("departures", (_f("minutes_to_next", "minutes until the next departure|next departure", "minutes", 0, 30),
                          _f("departures_per_hour", "departures per hour|frequency", "", 1, 20))),
          ("stop", (_f("daily_riders", "daily riders|daily boardings", "riders", 50, 20000),
                    _t("platform", "platform", "1|2|3|4|A|B")))),
         names=("Elm Street", "Harbor Square", "Old Mill", "Central Station", "Park Gate", "Kings Road",
                "River Bend", "North Quay", "Market Hall", "Tower Hill"), name_args=("stop_name", "name"),
         option=Opt(("line", "route"), ("12", "31", "7"), "on line {}")),
    Spec("hotels", "hotel", "H-####", ("hotel_id", "property_id", "hotel"), "hotel ID",
         (("rates", (_f("nightly_rate_usd", "nightly rate|price per night|room rate", "USD", 60, 900),
                     _f("rooms_free", "free rooms|rooms available", "rooms", 0, 40))),
          ("info", (_f("star_rating", "star rating|stars", "stars", 2, 5, 1),
                    _f("distance_to_center_km", "distance to the center|distance from downtown", "km", 0.2, 15, 1)))),
         names=("Blue Harbor Hotel", "Grand Meridian", "Hotel Lindenhof", "Seaview Inn", "Palm Court Hotel",
                "The Foundry", "Alpine Lodge", "Casa Verde", "Riverside Hotel", "Hotel Aurora"),
         name_args=("hotel_name", "name"), option=Opt(("room_type", "room"), ("double", "single", "suite"),
                                                      "for a {} room"),
         quote=Quote("stay_cost", "nightly_rate_usd", ("nights", "num_nights"), "nights", "total_usd", "stay cost",
                     "USD")),
    Spec("parking", "garage", "P-##", ("garage_id", "lot_id", "garage"), "garage ID",
         (("spaces", (_f("free_spaces", "free spaces|open spaces", "spaces", 0, 600),
                      _f("ev_chargers_free", "free EV chargers|EV chargers available", "chargers", 0, 20))),
          ("fees", (_f("hourly_fee", "hourly fee|price per hour", "USD", 1, 12, 2),
                    _f("max_height_m", "height limit|maximum vehicle height", "m", 1.8, 2.6, 2)))),
         names=("Central Garage", "Station Park", "Riverside Lot", "Mall Deck", "Airport P3", "Civic Center Lot",
                "Harbor Garage", "Museum Lot"), name_args=("garage_name", "name"),
         quote=Quote("parking_fee", "hourly_fee", ("hours", "duration_hours"), "hours", "fee_usd", "parking fee",
                     "USD")),
    Spec("fitness_classes", "class", "CL-###", ("class_id", "session_id", "class"), "class ID",
         (("class", (_f("spots_left", "free spots|spots left", "spots", 0, 30),
                     _f("duration_minutes", "duration|length", "minutes", 20, 90))),
          ("effort", (_f("calories_burned", "calories burned|calorie burn", "kcal", 150, 900),
                      _t("intensity", "intensity|difficulty", "low|medium|high")))),
         names=("Morning Spin", "Core Blast", "Power Yoga", "Aqua Fit", "Boxing Basics", "Pilates Flow",
                "Trail Run Club", "Kettlebell 101"), name_args=("class_name", "name")),
    Spec("school_grades", "student", "ST-#####", ("student_id", "student", "pupil_id"), "student ID",
         (("grades", (_f("gpa", "grade point average|GPA", "", 1.5, 4.0, 2),
                      _f("credits_earned", "credits earned|credits", "credits", 0, 140))),
          ("attendance", (_f("absences", "absences|days absent", "days", 0, 25),
                          _f("late_arrivals", "late arrivals|times late", "", 0, 20)))),
         names=("Ella Moreau", "Finn Kowalski", "Zara Ahmed", "Leo Santos", "Maya Brennan", "Oskar Lind",
                "Nina Varga", "Ravi Menon"), name_args=("student_name", "name"),
         option=Opt(("term", "semester"), ("spring", "fall"), "in the {} term")),
    Spec("real_estate", "listing", "L-#####", ("listing_id", "mls_number", "listing"), "listing number",
         (("price", (_f("asking_price_usd", "asking price|list price", "USD", 90000, 2500000),
                     _f("days_on_market", "days on the market|days listed", "days", 0, 300))),
          ("layout", (_f("bedrooms", "bedrooms|number of bedrooms", "", 1, 6),
                      _f("floor_area_m2", "floor area|living space", "m²", 35, 400)))),
         names=("12 Birch Lane", "4 Quarry Road", "88 Ocean Drive", "7 Mill Court", "31 Aspen Way", "2 Linden Row",
                "19 Harbor View", "55 Orchard St"), name_args=("address", "street_address")),
    Spec("car_rental", "car", "CR-###", ("car_id", "vehicle_code", "car"), "vehicle code",
         (("rates", (_f("daily_rate", "daily rate|price per day", "USD", 25, 300, 2),
                     _f("cars_available", "cars available|available cars", "cars", 0, 25))),
          ("specs", (_f("seats", "seats|number of seats", "", 2, 9),
                     _f("range_km", "range|driving range", "km", 300, 900)))),
         names=("City Compact", "Family Wagon", "Electric Hatch", "Mountain SUV", "Cargo Van", "Sport Coupe",
                "Eco Sedan", "Seven Seater"), name_args=("model", "car_name"),
         option=Opt(("insurance", "coverage"), ("basic", "full"), "with {} insurance"),
         quote=Quote("rental_quote", "daily_rate", ("days", "rental_days"), "days", "total_usd", "rental cost",
                     "USD")),
    Spec("energy_meters", "meter", "M-#####", ("meter_id", "meter", "meter_number"), "meter number",
         (("usage", (_f("kwh_today", "consumption today|usage today", "kWh", 1, 60, 1),
                     _f("kwh_month", "consumption this month|monthly usage", "kWh", 50, 1500))),
          ("tariff", (_f("tariff_per_kwh", "tariff|price per kWh", "EUR", 0.1, 0.6, 3),
                      _f("standing_charge", "standing charge|daily fixed charge", "EUR", 0.1, 1.2, 2)))),
         names=("Flat 4B", "Unit 12", "Bakery Annex", "Studio 3", "Main House", "Garden Cottage", "Shop Front",
                "Loft West"), name_args=("property", "name")),
    Spec("parcels", "parcel", "TRK-#######", ("tracking_number", "tracking_id", "parcel"), "tracking number",
         (("tracking", (_t("parcel_status", "status|delivery status", "label created|in transit|out for delivery|held at depot"),
                        _f("days_in_transit", "days in transit|transit time", "days", 0, 12))),
          ("parcel", (_f("weight_kg", "weight|parcel weight", "kg", 0.1, 30, 2),
                      _f("postage_usd", "postage|shipping fee", "USD", 3, 90, 2)))),
         ),
    Spec("restaurant_menu", "dish", "D-###", ("dish_id", "menu_item", "item"), "menu item number",
         (("menu", (_f("price", "price|menu price", "USD", 4, 60, 2),
                    _f("calories", "calories|calorie count", "kcal", 120, 1500))),
          ("kitchen", (_f("spice_level", "spice level|heat", "", 0, 5),
                       _f("wait_minutes", "waiting time|kitchen wait", "minutes", 5, 45)))),
         names=("Mushroom Ramen", "Falafel Wrap", "Margherita", "Beef Pho", "Caesar Salad", "Fish Tacos",
                "Veggie Burger", "Chicken Katsu"), name_args=("dish_name", "name")),
    Spec("cinema", "film", "F-####", ("film_id", "movie_id", "title_code"), "film ID",
         (("film", (_f("runtime_minutes", "running time|runtime|length", "minutes", 80, 190),
                    _f("critic_score", "critic score|rating", "points", 20, 99))),
          ("tickets", (_f("tickets_left", "tickets left|free seats", "tickets", 0, 250),
                       _f("ticket_price", "ticket price|price", "USD", 6, 22, 2)))),
         names=("Harbor Lights", "The Ninth Door", "Paper Tigers", "Cold Summer", "Last Orbit", "Wild Garden",
                "The Glass House", "Midnight Run"), name_args=("title", "film_title"),
         option=Opt(("showing", "screening"), ("evening", "matinee", "late"), "for the {} showing")),
    Spec("museum", "exhibit", "EX-###", ("exhibit_id", "exhibit", "gallery_code"), "exhibit code",
         (("visits", (_f("visitors_today", "visitors today|visitor count today", "visitors", 0, 4000),
                      _f("average_visit_minutes", "average visit time|typical visit length", "minutes", 10, 120))),
          ("tickets", (_f("ticket_price", "ticket price|admission price|entry fee", "EUR", 0, 30, 2),
                       _f("guided_tours_today", "guided tours today|tours today", "tours", 0, 12)))),
         names=("Bronze Age Gold", "Modern Glass", "Ocean Giants", "Silk Roads", "Early Clocks", "Arctic Light",
                "Printmakers", "Roman Coins"), name_args=("exhibit_name", "name")),
    Spec("pharmacy", "medication", "MED-####", ("medication_id", "drug_code", "med"), "medication code",
         (("stock", (_f("packs_in_stock", "packs in stock|stock", "packs", 0, 400),
                     _f("pack_price", "pack price|price per pack", "USD", 2, 150, 2))),
          ("dosage", (_f("dose_mg", "dose|strength", "mg", 5, 1000),
                      _f("tablets_per_pack", "tablets per pack|pack size", "tablets", 10, 100)))),
         names=("Ibuprofen", "Cetirizine", "Omeprazole", "Amoxicillin", "Loratadine", "Metformin", "Paracetamol",
                "Naproxen"), name_args=("drug_name", "name"),
         quote=Quote("prescription_cost", "pack_price", ("packs", "quantity"), "packs", "total_usd",
                     "total price", "USD")),
    Spec("bike_share", "station", "BS-###", ("station_id", "dock_id", "station"), "station ID",
         (("availability", (_f("bikes_available", "bikes available|free bikes", "bikes", 0, 40),
                            _f("docks_free", "free docks|empty docks", "docks", 0, 40))),
          ("ebikes", (_f("ebikes_available", "e-bikes available|electric bikes", "e-bikes", 0, 15),
                      _f("avg_battery_pct", "average e-bike battery|e-bike charge", "%", 5, 100)))),
         names=("Harbor Point", "City Hall", "Union Yard", "Parkside", "Canal Walk", "Museum Mile", "Depot Road",
                "Beach Front"), name_args=("station_name", "name")),
    Spec("farm_plots", "plot", "PLOT-##", ("plot_id", "field_id", "plot"), "plot ID",
         (("crop", (_t("crop", "crop|planted crop", "wheat|barley|maize|oats|canola|potatoes"),
                    _f("expected_yield_t", "expected yield|yield forecast", "tonnes", 2, 90, 1))),
          ("soil", (_f("soil_moisture_pct", "soil moisture|moisture", "%", 5, 60),
                    _f("area_ha", "area|plot size", "ha", 1, 80, 1)))),
         names=("North Meadow", "Long Acre", "Mill Field", "Upper Slope", "Creek Bottom", "West Paddock",
                "Stone Field", "Orchard Strip"), name_args=("plot_name", "name")),
    Spec("fleet", "vehicle", "V-###", ("vehicle_id", "unit", "van_id"), "vehicle ID",
         (("fuel", (_f("fuel_pct", "fuel level|fuel", "%", 0, 100),
                    _f("range_left_km", "remaining range|range left", "km", 0, 900))),
          ("service", (_f("odometer_km", "odometer reading|mileage", "km", 1000, 400000),
                       _f("km_to_service", "distance to the next service|km until service", "km", 0, 30000)))),
         ),
    Spec("server_monitoring", "host", "@@@-##", ("host", "hostname", "server"), "host name",
         (("load", (_f("cpu_pct", "CPU load|CPU usage", "%", 0, 100, 1),
                    _f("memory_used_gb", "memory used|RAM in use", "GB", 0.5, 256, 1))),
          ("health", (_f("uptime_days", "uptime|days up", "days", 0, 900),
                      _f("open_alerts", "open alerts|active alerts", "alerts", 0, 12)))),
         option=Opt(("region", "zone"), ("eu", "us", "ap"), "in the {} region")),
    Spec("bug_tracker", "ticket", "BUG-####", ("ticket_id", "issue_key", "bug"), "ticket key",
         (("ticket", (_t("priority", "priority", "low|medium|high|critical"),
                      _f("days_open", "days open|age", "days", 0, 400))),
          ("activity", (_f("comment_count", "comments|number of comments", "comments", 0, 80),
                        _t("assignee", "assignee|owner", "Ruth Adler|Jin Park|Sam Osei|Eva Dahl")))),
         ),
    Spec("insurance", "policy", "POL-#####", ("policy_number", "policy_id", "policy"), "policy number",
         (("premium", (_f("monthly_premium", "monthly premium|premium", "USD", 10, 600, 2),
                       _f("deductible", "deductible|excess", "USD", 100, 5000))),
          ("coverage", (_f("coverage_limit", "coverage limit|maximum payout", "USD", 5000, 2000000),
                        _f("claims_this_year", "claims this year|claims filed this year", "claims", 0, 6)))),
         ),
    Spec("invoices", "invoice", "INV-#####", ("invoice_id", "invoice_number", "invoice"), "invoice number",
         (("invoice", (_f("amount_due", "amount due|balance due", "USD", 20, 90000, 2),
                       _f("days_overdue", "days overdue|days past due", "days", 0, 120))),
          ("tax", (_f("tax_amount", "tax amount|tax", "USD", 1, 9000, 2),
                   _f("line_items", "line items|number of lines", "", 1, 40)))),
         names=("Acme Supplies", "Delta Print", "Brightside Ltd", "Nordic Wood", "Keystone IT", "Willow Cafe",
                "Arrow Freight", "Lumen Studio"), name_args=("client", "client_name")),
    Spec("events", "event", "EV-####", ("event_id", "event_code", "event"), "event ID",
         (("tickets", (_f("tickets_left", "tickets left|remaining tickets", "tickets", 0, 2000),
                       _f("ticket_price", "ticket price|price per ticket", "USD", 10, 250, 2))),
          ("venue", (_f("venue_capacity", "venue capacity|capacity", "people", 100, 20000),
                     _t("doors_open", "door opening time|doors open", "17:00|18:00|18:30|19:00|20:00")))),
         names=("Spring Jazz Night", "Harbor Food Fair", "Indie Film Week", "City Marathon Expo", "Folk in the Park",
                "Tech Meetup", "Winter Market", "Comedy Late"), name_args=("event_name", "name"),
         quote=Quote("ticket_total", "ticket_price", ("tickets", "quantity"), "tickets", "total_usd", "total price",
                     "USD")),
    Spec("courses", "course", "@@-###", ("course_code", "course_id", "course"), "course code",
         (("enrolment", (_f("seats_open", "open seats|free places", "seats", 0, 80),
                         _f("waitlist", "waitlist length|people on the waitlist", "", 0, 40))),
          ("load", (_f("credits", "credits|credit value", "credits", 1, 10),
                    _f("weekly_hours", "weekly hours|hours per week", "hours", 1, 12)))),
         names=("Intro to Databases", "Linear Algebra", "Modern Poetry", "Organic Chemistry", "Game Theory",
                "Urban Design", "Marine Biology", "Data Ethics"), name_args=("course_title", "title")),
    Spec("clinic", "doctor", "DR-###", ("doctor_id", "provider_id", "doctor"), "provider ID",
         (("schedule", (_f("free_slots_today", "free slots today|open appointments today", "slots", 0, 16),
                        _f("patients_today", "patients today|appointments booked today", "patients", 0, 30))),
          ("fees", (_f("consultation_fee", "consultation fee|visit fee", "USD", 40, 400, 2),
                    _f("avg_wait_days", "average wait|waiting time for an appointment", "days", 0, 45)))),
         names=("Dr. Lena Ortiz", "Dr. Samuel Reyes", "Dr. Amara Obi", "Dr. Henrik Holm", "Dr. Yuki Tanaka",
                "Dr. Clara Stein", "Dr. Omar Farouk", "Dr. Ines Costa"), name_args=("doctor_name", "name")),
    Spec("portfolio", "holding", "@@@@", ("ticker", "symbol", "stock"), "ticker symbol",
         (("quote", (_f("share_price", "share price|price per share", "USD", 3, 900, 2),
                     _f("day_change_pct", "change today|daily change", "%", -9, 9, 2))),
          ("position", (_f("shares_held", "shares held|number of shares", "shares", 1, 5000),
                        _f("dividend_yield_pct", "dividend yield|yield", "%", 0, 7, 2)))),
         quote=Quote("position_value", "share_price", ("shares", "quantity"), "shares", "value_usd",
                     "position value", "USD")),
    Spec("loyalty", "member", "LP-#####", ("member_id", "card_number", "member"), "member number",
         (("points", (_f("points_balance", "points balance|points", "points", 0, 90000),
                      _f("points_expiring", "points expiring this month|expiring points", "points", 0, 5000))),
          ("tier", (_t("tier", "tier|membership tier", "bronze|silver|gold|platinum"),
                    _f("visits_this_year", "visits this year|visits", "visits", 0, 120)))),
         names=("Ada Quinn", "Ben Okafor", "Chloe Martin", "Diego Alvarez", "Emma Novak", "Felix Braun",
                "Grace Liu", "Hugo Laine"), name_args=("member_name", "name")),
    # validation-only families (never in training)
    Spec("podcasts", "episode", "EP-####", ("episode_id", "episode", "ep"), "episode ID",
         (("stats", (_f("downloads", "downloads|download count", "downloads", 100, 500000),
                     _f("duration_minutes", "length|duration", "minutes", 10, 150))),
          ("ratings", (_f("listener_rating", "listener rating|rating", "stars", 1, 5, 1),
                       _f("reviews", "reviews|number of reviews", "reviews", 0, 3000)))),
         names=("Deep Current", "The Long Game", "Tiny Kitchens", "Night Signals", "Open Ledger", "Field Notes"),
         name_args=("episode_title", "title")),
    Spec("solar_arrays", "array", "SA-###", ("array_id", "inverter_id", "array"), "array ID",
         (("output", (_f("output_kwh_today", "output today|energy produced today", "kWh", 0, 400, 1),
                      _f("efficiency_pct", "efficiency|panel efficiency", "%", 12, 23, 1))),
          ("panels", (_f("panel_count", "panel count|number of panels", "panels", 6, 400),
                      _f("faults", "faults|fault count", "faults", 0, 9)))),
         names=("Barn Roof", "South Field", "Carport", "Warehouse Top", "Hill Array", "School Roof"),
         name_args=("site_name", "name"),
         option=Opt(("period", "window"), ("today", "yesterday"), "for {}")),
    Spec("escape_rooms", "escape room", "ER-##", ("room_id", "game_id", "escape_room"), "game ID",
         (("game", (_f("success_rate_pct", "success rate|escape rate", "%", 5, 90),
                    _f("time_limit_minutes", "time limit|game length", "minutes", 45, 90))),
          ("booking", (_f("slots_today", "free slots today|open slots", "slots", 0, 8),
                       _f("price_per_player", "price per player|player price", "USD", 15, 45, 2)))),
         names=("The Vault", "Pharaoh's Tomb", "Lab 13", "Haunted Manor", "Submarine", "Space Station"),
         name_args=("room_name", "title")),
    Spec("pottery_studio", "kiln", "K-##", ("kiln_id", "kiln", "oven_id"), "kiln ID",
         (("firing", (_f("peak_temp_c", "peak temperature|top temperature", "°C", 900, 1300),
                      _f("hours_left", "hours left in the firing|remaining firing time", "hours", 0, 14, 1))),
          ("load", (_f("pieces_loaded", "pieces loaded|load count", "pieces", 0, 120),
                    _f("shelves_free", "free shelves|empty shelves", "shelves", 0, 10)))),
         names=("Big Blue", "Test Kiln", "Raku Pit", "Front Kiln", "Gas Kiln", "Little Kiln"),
         name_args=("kiln_name", "name")),
)
VALID_FAMILIES = ("podcasts", "solar_arrays", "escape_rooms", "pottery_studio")
TRAIN_FAMILIES = tuple(s.family for s in SPECS if s.family not in VALID_FAMILIES)

# --- surface forms ----------------------------------------------------------------------------------------------

LOOKUP_VERBS = ("get", "fetch", "lookup", "check", "read", "query", "show")
FIND_VERBS = ("find", "search", "lookup", "resolve")
LOOKUP_DESCRIPTIONS = (
    "Returns the {what} of a {entity}.",
    "Look up the {what} for a given {entity}.",
    "Gets {what} by {id_word}.",
    "{What} of one {entity}, by its {id_word}.",
    "Fetches a {entity}'s {what} from the {family} system.",
    "Use this to read the {what} of a {entity}.",
    "Reports {what} for the {entity} you name.",
)
FIND_DESCRIPTIONS = (
    "Finds a {entity} by name and returns its {id_word}.",
    "Search {entity} records by name; gives the {id_word}.",
    "Resolves a {entity} name to its {id_word}.",
    "Returns the {id_word} of the {entity} with this name.",
)
QUOTE_DESCRIPTIONS = (
    "Computes the {words} for a {entity} and a number of {qty}.",
    "Price quote: {words} of a given number of {qty} for one {entity}.",
    "Calculates {words} ({qty} times the {field}).",
)


def _camel(words: list[str]) -> str:
    return words[0].lower() + "".join(w[:1].upper() + w[1:] for w in words[1:])


def _tool_name(rng: random.Random, verb: str, nouns: list[str]) -> str:
    style = rng.randrange(5)
    if style == 0:
        return "_".join([verb, *nouns])
    if style == 1:
        return _camel([verb, *nouns])
    if style == 2:
        return "_".join([*nouns, rng.choice(["lookup", "info", "status", "data"])])
    if style == 3:
        return _camel([*nouns, rng.choice(["info", "lookup", "details"])])
    return "-".join([verb, *nouns]) if rng.random() < 0.3 else "_".join(nouns)


def make_id(rng: random.Random, pattern: str) -> str:
    return "".join(str(rng.randrange(10)) if c == "#" else chr(65 + rng.randrange(26)) if c == "@" else c
                   for c in pattern)


@dataclass
class Function:
    """One function of a family: kind "lookup" (a group of fields), "find" or "quote"."""
    family: str
    kind: str
    fields: tuple[F, ...] = ()
    option: bool = False
    quote: Quote | None = None
    variants: list[Tool] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.family}.{self.kind}.{self.fields[0].key if self.fields else self.kind}"


@dataclass
class Family:
    spec: Spec
    entities: list[dict]                # {"id", "name", "values": {option value or "": {field key: value}}}
    functions: list[Function]
    by_id: dict[str, dict]
    by_name: dict[str, dict]
    fake_ids: list[str]                 # example values for docs: never a real entity
    fake_names: list[str]

    @property
    def tools(self) -> list[Tool]:
        return [t for f in self.functions for t in f.variants]


def _value(rng: random.Random, f: F):
    if f.choices:
        return rng.choice(f.choices)
    x = rng.uniform(f.lo, f.hi)
    return int(round(x)) if f.dec == 0 else round(x, f.dec)


def _build_family(spec: Spec, used_names: set[str]) -> Family:
    rng = random.Random(f"toolworld:{spec.family}")
    n = len(spec.names) - 2 if spec.names else 10       # two names are kept for the docs' examples
    ids: list[str] = []
    while len(ids) < n + 3:
        i = make_id(rng, spec.id_pattern) if spec.id_pattern else None
        if i is None:
            break
        if i not in ids:
            ids.append(i)
    names = list(spec.names)
    rng.shuffle(names)
    if not spec.id_pattern:          # keyed by name (weather: the city is the key)
        ids = names[:n] + names[n:]
    fields = [f for _, group in spec.groups for f in group]
    options = spec.option.values if spec.option else ("",)
    entities = []
    for k in range(n):
        values = {opt: {f.key: _value(rng, f) for f in fields} for opt in options}
        entities.append({"id": ids[k], "name": names[k] if names else None, "values": values})
    fam = Family(spec, entities, [], {e["id"].upper(): e for e in entities},
                 {e["name"].lower(): e for e in entities if e["name"]}, ids[n:], names[n:])
    for gi, (noun, group) in enumerate(spec.groups):
        fam.functions.append(Function(spec.family, "lookup", group, option=gi == 0 and spec.option is not None))
    if spec.names and spec.id_pattern:
        fam.functions.append(Function(spec.family, "find"))
    if spec.quote:
        fam.functions.append(Function(spec.family, "quote", quote=spec.quote))
    for gi, fn in enumerate(fam.functions):
        for v in range(2 if fn.kind != "lookup" else 3):
            fn.variants.append(_variant(rng, fam, fn, gi, used_names))
    return fam


def _variant(rng: random.Random, fam: Family, fn: Function, gi: int, used: set[str]) -> Tool:
    spec = fam.spec
    ent = spec.entity.replace(" ", "_").split("_")
    if fn.kind == "lookup":
        noun = spec.groups[gi][0]
        what = " and ".join(f.words[0] for f in fn.fields)
        nouns = [*([ent[-1]] if rng.random() < 0.8 and noun not in ent else []), *noun.split("_")]
        verbs, descs = LOOKUP_VERBS, LOOKUP_DESCRIPTIONS
    elif fn.kind == "find":
        what = spec.id_word
        nouns = [ent[-1], rng.choice(["id", "by_name", "code", "records"])]
        nouns = [w for x in nouns for w in x.split("_")]
        verbs, descs = FIND_VERBS, FIND_DESCRIPTIONS
    else:
        q = fn.quote
        what = q.words
        nouns = q.noun.split("_")
        verbs, descs = ("get", "calc", "compute", "estimate"), QUOTE_DESCRIPTIONS
    for _ in range(100):
        name = _tool_name(rng, rng.choice(verbs), nouns)
        if name not in used and name not in DEMO_TOOLS:
            break
    else:
        raise RuntimeError(f"no free tool name for {fn.id}")
    used.add(name)
    desc = rng.choice(descs).format(what=what, What=what[:1].upper() + what[1:], entity=spec.entity,
                                    id_word=spec.id_word, family=spec.family.replace("_", " "),
                                    words=getattr(fn.quote, "words", ""), qty=getattr(fn.quote, "qty_words", ""),
                                    field=next((f.words[0] for _, g in spec.groups for f in g
                                                if fn.quote and f.key == fn.quote.field), ""))
    props: dict[str, Any] = {}
    required: list[str] = []
    if fn.kind == "find":
        arg = rng.choice(spec.name_args)
        ex = rng.choice(fam.fake_names)
        props[arg] = {"type": "string", "description": rng.choice(
            [f'The {spec.entity} name, e.g. "{ex}"', f'Name to search for (example: "{ex}")',
             f'{spec.entity.capitalize()} name such as "{ex}"'])}
        required.append(arg)
    else:
        arg = rng.choice(spec.id_args)
        ex = rng.choice(fam.fake_ids) if spec.id_pattern else rng.choice(fam.fake_names)
        props[arg] = {"type": "string", "description": rng.choice(
            [f'The {spec.id_word}, e.g. "{ex}"', f'{spec.id_word.capitalize()} (for example "{ex}")',
             f'Which {spec.entity}: its {spec.id_word}, like "{ex}"', f"The {spec.id_word} to look up"])}
        required.append(arg)
    opt_arg = qty_arg = None
    if fn.option:
        o = spec.option
        opt_arg = rng.choice(o.args)
        props[opt_arg] = {"type": "string", "enum": list(o.values), "description": rng.choice(
            [f"One of {', '.join(o.values)} (default {o.values[0]})",
             f"{opt_arg.replace('_', ' ').capitalize()}: {' / '.join(o.values)}; defaults to {o.values[0]}"])}
    if fn.kind == "quote":
        q = fn.quote
        qty_arg = rng.choice(q.qty_args)
        example = rng.choice([3, 7, 12, 25, 40])
        props[qty_arg] = {"type": "number", "description": rng.choice(
            [f"How many {q.qty_words}, e.g. {example}", f"Number of {q.qty_words}"])}
        required.append(qty_arg)
    params = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
    backend = _backend(fam, fn, arg, opt_arg, qty_arg)
    return Tool(name=name, description=desc, parameters=params, fn=backend)


def _backend(fam: Family, fn: Function, arg: str, opt_arg: str | None, qty_arg: str | None):
    spec = fam.spec

    def unknown(value):
        what = spec.entity if fn.kind == "find" else spec.id_word
        return {"error": f"no {spec.entity} found for {what} {value!r}"}

    if fn.kind == "find":
        def find(**kw):
            e = fam.by_name.get(str(kw[arg]).strip().lower())
            return unknown(kw[arg]) if e is None else {spec.id_args[0]: e["id"], "name": e["name"]}
        return find

    def lookup(**kw):
        key = str(kw[arg]).strip()
        e = fam.by_id.get(key.upper()) or (fam.by_name.get(key.lower()) if not spec.id_pattern else None)
        if e is None:
            return unknown(kw[arg])
        out: dict[str, Any] = {spec.id_args[0]: e["id"]}
        if fn.kind == "quote":
            q = fn.quote
            opt = spec.option.values[0] if spec.option else ""
            qty = kw[qty_arg]
            out[q.qty_args[0]] = qty
            out[q.key] = round(e["values"][opt][q.field] * qty, 2)
            return out
        default = spec.option.values[0] if spec.option else ""
        opt = (kw.get(opt_arg) or default) if fn.option else default
        if fn.option:
            out[spec.option.args[0]] = opt
        for f in fn.fields:
            out[f.key] = e["values"][opt][f.key]
        return out
    return lookup


# --- the world ------------------------------------------------------------------------------------------------

def _build() -> dict[str, Family]:
    used: set[str] = set()
    return {s.family: _build_family(s, used) for s in SPECS}


FAMILIES: dict[str, Family] = _build()
TOOLS = ToolSet([t for fam in FAMILIES.values() for t in fam.tools])
_FAMILY_OF = {t.name: fam.spec.family for fam in FAMILIES.values() for t in fam.tools}
_FUNCTION_OF = {t.name: fn for fam in FAMILIES.values() for fn in fam.functions for t in fn.variants}


def family_of(name: str) -> str | None:
    return _FAMILY_OF.get(name)


def function_of(name: str) -> Function | None:
    return _FUNCTION_OF.get(name)


def offered(names: str | list[str]) -> ToolSet:
    """The ToolSet of these world (or demo) tools, in this order: "a,b,c" or a list."""
    names = names.split(",") if isinstance(names, str) else names
    out = []
    for n in names:
        if n in TOOLS:
            out.append(TOOLS[n])
        elif n in DEMO_TOOLS:
            out.append(DEMO_TOOLS[n])
        else:
            raise KeyError(f"no world or demo tool named {n!r}")
    return ToolSet(out)


_ATTR = re.compile(r"^[A-Za-z0-9_.\-]+(,[A-Za-z0-9_.\-]+)*$")


def __getattr__(attr: str):
    """`toolworld.py:nameA,nameB` (a task's "tools" field) resolves to that subset of the world's tools."""
    if _ATTR.match(attr) and all(n in TOOLS or n in DEMO_TOOLS for n in attr.split(",")):
        return offered(attr)
    raise AttributeError(attr)
