"""A simulated contact centre that writes a canonical ticket event log for demos and tests.

Nobody can ship real customer tickets with an open-source project, yet the pipeline, the
models and the report only mean something on data where escalation has causes. This module
simulates customers (tiers, contact histories, anger that carries over), agents (teams,
latent tenure), arrivals (hour/weekday seasonality, a mild trend, outage incidents) and each
ticket's life (replies, holds, transfers, reassignments, priority corrections, SLA breaches,
resolution, reopen, close). Escalation follows a hazard over the ticket's life; the true
priority is latent and the typed priority a noisy view of it that agents correct over time.
What drives what is documented in docs/demo-data.md.

Every row only holds what was known at its event_time (counters, status, text, priority,
escalation level so far); latent variables never reach the log.
"""

from __future__ import annotations

import heapq
import math
import time
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.schema import CANONICAL_COLUMNS, PRIORITY_ORDER

# ---------------------------------------------------------------------------------------------
# Vocabulary and knobs. Everything the simulator "believes" about a contact centre is here.
# ---------------------------------------------------------------------------------------------

HOUR = 3600.0
DAY = 24 * HOUR
MINUTE = 60.0

CHANNELS = ("phone", "chat", "email", "web", "social")
CHANNEL_SHARE = (0.30, 0.25, 0.25, 0.12, 0.08)
# Median minutes until an agent first acts / answers a customer message, and until a
# customer answers an agent who asked for something.
FIRST_RESPONSE_MIN = {"phone": 4, "chat": 3, "email": 300, "web": 360, "social": 120}
AGENT_RESPONSE_MIN = {"phone": 60, "chat": 4, "email": 240, "web": 300, "social": 100}
CUSTOMER_RESPONSE_MIN = {"phone": 180, "chat": 3, "email": 600, "web": 720, "social": 240}
# Written channels are answered in business hours only (most of the time).
WRITTEN_CHANNELS = frozenset({"email", "web", "social"})

TIERS = ("standard", "gold", "vip")
TIER_SHARE = (0.80, 0.15, 0.05)
TIER_RISK = (0.0, 0.3, 0.6)
TIER_IMPACT = (0.0, 0.35, 0.9)

SLA_HOURS = {"urgent": 4, "high": 8, "normal": 24, "low": 72}
PRIORITY_SPEED = (1.6, 1.0, 0.6, 0.35)  # response-time multiplier for low..urgent
TRUE_PRIORITY_CUTS = (0.55, 1.35, 2.1)  # latent impact score -> low/normal/high/urgent

FRONTLINE_TEAMS = ("billing_team", "tech_support_t1", "accounts", "logistics", "retention", "complaints_desk")
SPECIALIST_TEAMS = ("tech_support_t2", "billing_specialists", "legal_team", "supervisors")
TEAMS = FRONTLINE_TEAMS + SPECIALIST_TEAMS
CLOSING_REVIEW_P = 0.8  # share of mis-prioritised tickets whose priority is put right at resolution
ESCALATION_TYPES = ("hierarchical", "functional", "time_based", "priority", "customer_initiated")


@dataclass(frozen=True)
class Subcategory:
    name: str
    weight: float
    complexity: float  # mean extra agent work needed to resolve
    risk: float  # log-hazard offset for escalation
    impact: float  # contribution to the latent true priority
    subjects: tuple[str, ...]
    descriptions: tuple[str, ...]


@dataclass(frozen=True)
class Category:
    name: str
    weight: float
    risk: float
    team: str
    specialist: str
    subcategories: tuple[Subcategory, ...] = field(default_factory=tuple)


def _make_subcategory(name, weight, complexity, risk, impact, subjects, descriptions) -> Subcategory:
    return Subcategory(name, weight, complexity, risk, impact, tuple(subjects), tuple(descriptions))


# Category(name, share of tickets, escalation log-hazard offset, frontline team, specialist team),
# _make_subcategory(name, share within category, complexity, log-hazard offset, priority impact, ...).
# fmt: off
CATEGORIES = (
    Category("billing", 0.24, 0.0, "billing_team", "billing_specialists", (
        _make_subcategory("wrong_charge", 0.3, 1.0, 0.1, 0.9,
                          ["Wrong amount on my bill", "Charged for something I did not order"],
                          ["My latest bill shows a charge I don't recognise.", "I was charged more than the price I agreed."]),
        _make_subcategory("refund_request", 0.25, 0.8, 0.0, 0.6,
                          ["Refund request", "Where is my refund?"],
                          ["I returned the item and would like my money back.", "I was promised a refund but haven't received it."]),
        _make_subcategory("payment_failed", 0.2, 0.7, 0.0, 1.1,
                          ["Payment failed", "Card payment declined"],
                          ["My payment keeps failing even though my card works elsewhere.", "The direct debit did not go through."]),
        _make_subcategory("invoice_question", 0.15, 0.3, -0.6, 0.2,
                          ["Question about my invoice", "Invoice copy"],
                          ["Could you explain one line on my invoice?", "Please send me a copy of last month's invoice."]),
        _make_subcategory("double_billing", 0.1, 1.2, 0.4, 1.2,
                          ["Charged twice", "Duplicate payment taken"],
                          ["I have been billed twice for the same month.", "Two identical payments left my account."]),
    )),
    Category("technical", 0.26, 0.1, "tech_support_t1", "tech_support_t2", (
        _make_subcategory("connectivity", 0.3, 1.4, 0.1, 1.1,
                          ["Connection keeps dropping", "No internet connection"],
                          ["My connection drops several times a day.", "I can't connect since this morning."]),
        _make_subcategory("login_error", 0.2, 0.6, -0.3, 0.8,
                          ["Can't log in", "Login error"],
                          ["The app says my password is wrong but it isn't.", "I get an error page whenever I log in."]),
        _make_subcategory("app_bug", 0.2, 1.6, 0.1, 0.7,
                          ["App crashes", "Bug in the app"],
                          ["The app crashes when I open my account page.", "A button in the app does nothing."]),
        _make_subcategory("slow_performance", 0.18, 1.2, -0.1, 0.6,
                          ["Service is very slow", "Slow speeds"],
                          ["Everything has been very slow for a week.", "Pages take ages to load."]),
        _make_subcategory("outage", 0.12, 1.0, 0.7, 2.0,
                          ["Service outage", "Nothing works"],
                          ["The whole service stopped working.", "Nothing loads at all since an hour ago."]),
    )),
    Category("account", 0.16, -0.4, "accounts", "tech_support_t2", (
        _make_subcategory("password_reset", 0.35, 0.2, -0.8, 0.3,
                          ["Password reset", "Reset link not arriving"],
                          ["I need to reset my password.", "The password reset email never arrives."]),
        _make_subcategory("update_details", 0.25, 0.3, -0.6, 0.1,
                          ["Change my details", "Update address"],
                          ["I'd like to update my address and phone number.", "Please change the email on my account."]),
        _make_subcategory("account_locked", 0.25, 0.8, 0.2, 1.2,
                          ["Account locked", "Locked out of my account"],
                          ["My account has been locked and I can't use it.", "I'm locked out after a security check."]),
        _make_subcategory("data_request", 0.15, 1.0, 0.3, 0.6,
                          ["Request for my data", "Delete my data"],
                          ["I want a copy of the personal data you hold on me.", "Please delete my personal data."]),
    )),
    Category("delivery", 0.16, -0.1, "logistics", "billing_specialists", (
        _make_subcategory("late_delivery", 0.4, 0.7, 0.0, 0.6,
                          ["Order not arrived", "Late delivery"],
                          ["My order was due three days ago and hasn't arrived.", "Tracking hasn't updated for days."]),
        _make_subcategory("missing_item", 0.25, 1.0, 0.2, 0.9,
                          ["Item missing from order", "Parcel incomplete"],
                          ["One item was missing from my parcel.", "The box arrived but something is missing."]),
        _make_subcategory("damaged_item", 0.2, 1.0, 0.2, 0.8,
                          ["Item arrived damaged", "Broken on arrival"],
                          ["The product arrived broken.", "The parcel was crushed and the item is damaged."]),
        _make_subcategory("address_change", 0.15, 0.3, -0.6, 0.3,
                          ["Change delivery address", "Wrong address on order"],
                          ["Can I change the delivery address for my order?", "I entered the wrong address."]),
    )),
    Category("cancellation", 0.08, 0.5, "retention", "billing_specialists", (
        _make_subcategory("cancel_service", 0.5, 0.6, 0.1, 0.7,
                          ["Cancel my subscription", "Cancellation request"],
                          ["I'd like to end my contract.", "Please stop my subscription at the end of the month."]),
        _make_subcategory("contract_terms", 0.25, 1.0, 0.2, 0.6,
                          ["Question about contract terms", "Minimum term"],
                          ["I don't understand the minimum term in my contract.", "I was told something different about my contract."]),
        _make_subcategory("cancellation_fee", 0.25, 1.0, 0.4, 0.9,
                          ["Cancellation fee", "Exit fee dispute"],
                          ["I was charged an exit fee I wasn't told about.", "Why do I have to pay to leave?"]),
    )),
    Category("complaints", 0.1, 0.8, "complaints_desk", "legal_team", (
        _make_subcategory("service_quality", 0.35, 1.0, 0.1, 0.7,
                          ["Complaint about your service", "Poor service"],
                          ["I'm not happy with the service I received.", "The quality of your service has dropped."]),
        _make_subcategory("staff_behaviour", 0.2, 1.0, 0.3, 0.8,
                          ["Complaint about an agent", "Rude staff"],
                          ["The person I spoke to was rude to me.", "Your agent hung up on me."]),
        _make_subcategory("unresolved_issue", 0.3, 1.2, 0.5, 1.0,
                          ["Issue still not resolved", "Nobody fixes my problem"],
                          ["My earlier problem was never fixed.", "I keep being told it's fixed but it isn't."]),
        _make_subcategory("compensation_claim", 0.15, 1.3, 0.3, 1.0,
                          ["Compensation claim", "Claim for losses"],
                          ["I want compensation for the days without service.", "Your mistake cost me money."]),
    )),
)
# fmt: on

# Cue phrase banks: the visible signals escalations partly follow. They are deliberately
# noisy: calm customers use some of them, and many escalations have none.
CUES = {
    "anger": (
        "This is unacceptable.",
        "I am absolutely furious.",
        "This is the worst service I have ever had.",
        "Completely unacceptable.",
    ),
    "repeat": (
        "This is the third time I'm calling about this.",
        "I already contacted you last week.",
        "I have explained this twice already.",
        "Same problem as my last ticket.",
    ),
    "supervisor": (
        "I want to speak to your supervisor.",
        "Let me talk to a manager.",
        "Escalate this to your manager now.",
    ),
    "legal": (
        "My lawyer will be in touch.",
        "I am taking this to the ombudsman.",
        "I will report you to the regulator.",
    ),
    "cancel": (
        "I want to cancel my account.",
        "I'm going to switch provider.",
        "I'll take my business elsewhere.",
    ),
    "outage": ("The service is down.", "Is there an outage?", "It's not working for everyone here."),
}
ANSWER_TEXTS = (
    "Here are the details you asked for.",
    "I've attached the screenshot.",
    "I tried what you suggested but it didn't help.",
    "Yes, that's correct.",
    "My account number is in my first message.",
    "Thanks, I'll try that.",
)
CHASER_TEXTS = (
    "Any update on this?",
    "I'm still waiting for a reply.",
    "Is anyone looking at this?",
    "Following up on my earlier message.",
)
FRUSTRATION_TEXTS = (
    "This is taking far too long.",
    "I have been waiting for days.",
    "Why is this so difficult?",
)
REOPEN_TEXTS = (
    "The problem is back.",
    "It's still not fixed.",
    "This happened again after you closed my ticket.",
)
CALM_OPENERS = ("Hello.", "Hi.", "Good morning.", "")

# Escalation hazard knobs (per decision point; see docs/demo-data.md).
HIERARCHICAL_BASE = 0.0008
FUNCTIONAL_BASE = 0.0045
TIME_BASED_BY_TIER = (0.009, 0.035, 0.09)
CUSTOMER_INITIATED_P = 0.6
ANGER_WEIGHT = 0.9
FOLLOWUP_P = {"escalated": 0.3, "reopened": 0.25, "angry": 0.15}


# ---------------------------------------------------------------------------------------------
# Random numbers: pre-drawn numpy pools consumed by the per-ticket loop (fast and reproducible).
# ---------------------------------------------------------------------------------------------


class _Draws:
    """Uniform and normal pools from one numpy Generator, refilled in a fixed order."""

    def __init__(self, rng: np.random.Generator, pool: int = 65_536) -> None:
        self._rng = rng
        self._pool = pool
        self._u: list[float] = []
        self._ui = 0
        self._z: list[float] = []
        self._zi = 0

    def u(self) -> float:
        i = self._ui
        if i >= len(self._u):
            self._u = self._rng.random(self._pool).tolist()
            i = 0
        self._ui = i + 1
        return self._u[i]

    def z(self) -> float:
        i = self._zi
        if i >= len(self._z):
            self._z = self._rng.standard_normal(self._pool).tolist()
            i = 0
        self._zi = i + 1
        return self._z[i]

    def lognormal(self, median: float, sigma: float) -> float:
        return median * math.exp(sigma * self.z())

    def pick(self, items: tuple | list):
        return items[int(self.u() * len(items))]

    def weighted(self, cumulative: list[float]) -> int:
        return min(bisect_right(cumulative, self.u() * cumulative[-1]), len(cumulative) - 1)

    def poisson(self, mean: float) -> int:
        limit, k, p = math.exp(-mean), 0, self.u()
        while p > limit:
            k += 1
            p *= self.u()
        return k


def _cumulate(weights) -> list[float]:
    return np.cumsum(np.asarray(weights, dtype=float)).tolist()


# ---------------------------------------------------------------------------------------------
# The world: customers, agents, arrivals and incidents. Built once, shared by all chunks.
# ---------------------------------------------------------------------------------------------


@dataclass
class _World:
    start_s: float
    end_s: float
    arrivals: np.ndarray  # seconds since epoch, sorted, one per ticket
    incident_share: np.ndarray  # per ticket: share of arrivals in that hour caused by an outage
    fresh_customer: np.ndarray  # per ticket: the customer when it is not a follow-up
    cust_tier: np.ndarray
    cust_channel: np.ndarray
    cust_ids: list[str]
    # Customer history (updated as tickets are simulated in arrival order, across chunks).
    cust_last_created: np.ndarray
    cust_prev_created: np.ndarray
    cust_last_category: np.ndarray
    cust_anger: np.ndarray
    cust_anger_at: np.ndarray
    cust_old_anger: np.ndarray
    agent_ids: list[str]
    agent_hired: np.ndarray
    team_agents: dict[str, list[int]]  # agent indices per team, sorted by hire time
    team_hired: dict[str, list[float]]
    followups: list = field(default_factory=list)  # heap of (due, seq, customer, category, sub)
    followup_seq: int = 0


def _draw_hourly_intensity(
    start: pd.Timestamp, n_hours: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Arrival weight per hour (business hours and weekdays heavier, mild trend, outage bursts)."""
    hours = pd.date_range(start, periods=n_hours, freq="h")
    # fmt: off
    hour_w = np.array([0.12, 0.08, 0.06, 0.06, 0.08, 0.12, 0.25, 0.45, 0.8, 1.0, 1.1, 1.1,
                       1.0, 0.95, 1.0, 1.0, 0.95, 0.8, 0.6, 0.5, 0.45, 0.4, 0.3, 0.18])
    # fmt: on
    day_w = np.array([1.15, 1.05, 1.0, 1.0, 0.95, 0.45, 0.35])
    weight = hour_w[hours.hour.to_numpy()] * day_w[hours.day_of_week.to_numpy()]
    weight = weight * (1.0 + 0.15 * np.arange(n_hours) / max(n_hours, 1))
    boost = np.ones(n_hours)
    n_incidents = int(rng.poisson(1.5 * n_hours / (30 * 24)))
    for _ in range(n_incidents):
        begin = int(rng.integers(0, n_hours))
        length = int(rng.integers(2, 19))
        boost[begin : begin + length] *= rng.uniform(1.6, 3.0)
    weight = weight * boost
    return weight / weight.sum(), 1.0 - 1.0 / boost


def _build_world(n_tickets: int, seed: int, start: str, months: int) -> _World:
    """Draw everything that is shared across chunks from its own seeded stream."""
    rng = np.random.default_rng([seed, 0])
    start_ts = pd.Timestamp(start)
    start_ts = start_ts.tz_localize("UTC") if start_ts.tzinfo is None else start_ts.tz_convert("UTC")
    end_ts = start_ts + pd.DateOffset(months=months)
    n_hours = int((end_ts - start_ts) / pd.Timedelta(hours=1))
    hour_p, incident_by_hour = _draw_hourly_intensity(start_ts.tz_localize(None), n_hours, rng)
    hour_idx = np.sort(rng.choice(n_hours, size=n_tickets, p=hour_p))
    offsets = rng.random(n_tickets) * HOUR
    start_s = start_ts.value / 1e9
    arrivals = start_s + hour_idx * HOUR + offsets
    order = np.argsort(arrivals, kind="stable")
    arrivals = np.floor(arrivals[order])
    hour_idx = hour_idx[order]

    n_customers = max(50, n_tickets // 3)
    # Heavy-tailed contact frequency: a few customers call very often.
    activity = rng.pareto(2.5, n_customers) + 0.3
    cum = np.cumsum(activity)
    fresh_customer = np.searchsorted(cum, rng.random(n_tickets) * cum[-1], side="right")
    fresh_customer = np.minimum(fresh_customer, n_customers - 1)
    cust_tier = rng.choice(3, size=n_customers, p=TIER_SHARE)
    cust_channel = rng.choice(len(CHANNELS), size=n_customers, p=CHANNEL_SHARE)
    width = max(6, len(str(n_customers)))
    cust_ids = [f"C{i + 1:0{width}d}" for i in range(n_customers)]

    n_frontline = max(30, n_tickets // 400)
    team_sizes = {}
    for cat in CATEGORIES:
        team_sizes[cat.team] = max(4, round(n_frontline * cat.weight))
    for team in SPECIALIST_TEAMS:
        team_sizes[team] = max(3, round(n_frontline * 0.08))
    n_agents = sum(team_sizes.values())
    # Tenure at the window start (months): most are established, some were hired during it.
    tenure_months = rng.exponential(24.0, n_agents)
    hired = start_s - tenure_months * 30 * DAY
    late = rng.random(n_agents) < 0.15
    hired[late] = start_s + rng.random(int(late.sum())) * (end_ts.value / 1e9 - start_s) * 0.9
    awidth = max(4, len(str(n_agents)))
    agent_ids = [f"A{i + 1:0{awidth}d}" for i in range(n_agents)]
    team_agents: dict[str, list[int]] = {}
    team_hired: dict[str, list[float]] = {}
    next_agent = 0
    for team in TEAMS:
        members = list(range(next_agent, next_agent + team_sizes[team]))
        next_agent += team_sizes[team]
        if team in SPECIALIST_TEAMS:  # specialists and supervisors are experienced
            hired[members] = np.minimum(
                hired[members], start_s - (12 + rng.exponential(24.0, len(members))) * 30 * DAY
            )
        members.sort(key=lambda a: hired[a])
        team_agents[team] = members
        team_hired[team] = [float(hired[a]) for a in members]

    never = np.full(n_customers, -np.inf)
    return _World(
        start_s=start_s,
        end_s=end_ts.value / 1e9,
        arrivals=arrivals,
        incident_share=incident_by_hour[hour_idx],
        fresh_customer=fresh_customer,
        cust_tier=cust_tier,
        cust_channel=cust_channel,
        cust_ids=cust_ids,
        cust_last_created=never.copy(),
        cust_prev_created=never.copy(),
        cust_last_category=np.full(n_customers, -1, dtype=np.int64),
        cust_anger=np.zeros(n_customers),
        cust_anger_at=never.copy(),
        cust_old_anger=np.zeros(n_customers),
        agent_ids=agent_ids,
        agent_hired=hired,
        team_agents=team_agents,
        team_hired=team_hired,
    )


# ---------------------------------------------------------------------------------------------
# One chunk of tickets.
# ---------------------------------------------------------------------------------------------

_CAT_CUM = _cumulate([c.weight for c in CATEGORIES])
_SUB_CUM = [_cumulate([s.weight for s in c.subcategories]) for c in CATEGORIES]
_CHANNEL_CUM = _cumulate(CHANNEL_SHARE)
_OUTAGE_SUB = [s.name for s in CATEGORIES[1].subcategories].index("outage")


class _WindowEnd(Exception):
    """Raised by a row past the end of the data window: the ticket stays open there."""


class _ChunkSimulator:
    """Simulates the tickets of one chunk; keeps per-row and per-ticket column lists."""

    def __init__(self, world: _World, draws: _Draws) -> None:
        self.w = world
        self.d = draws
        # Per-ticket columns (repeated over the ticket's rows when the table is built).
        self.t_id: list[str] = []
        self.t_created: list[float] = []
        self.t_channel: list[str] = []
        self.t_category: list[str] = []
        self.t_sub: list[str] = []
        self.t_customer: list[str] = []
        self.t_tier: list[str] = []
        self.t_subject: list[str] = []
        self.t_description: list[str] = []
        self.t_rows: list[int] = []
        # Per-row columns.
        self.r_time: list[int] = []
        self.r_event: list[str] = []
        self.r_priority: list[str] = []
        self.r_agent: list[str] = []
        self.r_group: list[str] = []
        self.r_status: list[str] = []
        self.r_message: list[str | None] = []
        self.r_reassign: list[int] = []
        self.r_reopen: list[int] = []
        self.r_cmsg: list[int] = []
        self.r_amsg: list[int] = []
        self.r_sla: list[int] = []
        self.r_level: list[int] = []
        self.r_etype: list[str | None] = []
        # Latent truth per ticket (tests and docs only; never written to the log).
        self.truth: dict[str, list] = {
            k: []
            for k in (
                "ticket_id",
                "true_priority",
                "creation_priority",
                "is_followup",
                "incident",
                "anger_at_creation",
                "agent_tenure_months",
                "complexity",
            )
        }

    # -- helpers -------------------------------------------------------------------------

    def pick_agent(self, team: str, t: float, avoid: int = -1) -> int:
        """A random agent of the team already hired at time t (never the current one)."""
        members = self.w.team_agents[team]
        n = max(1, bisect_right(self.w.team_hired[team], t))
        a = members[int(self.d.u() * n)]
        if a == avoid and n > 1:
            a = members[(members.index(a) + 1) % n]
        return a

    def measure_tenure(self, agent: int, t: float) -> float:
        return max(0.0, (t - self.w.agent_hired[agent]) / (30 * DAY))

    def compose_text(self, base: str, cues: list[str]) -> str:
        parts = [base] if base else []
        parts.extend(cues)
        return " ".join(parts)

    # -- one ticket ----------------------------------------------------------------------

    def simulate_ticket(self, ticket_no: int, g: int) -> None:
        """Simulate one ticket's whole life and append its rows (cut at the window end)."""
        w, d = self.w, self.d
        u = d.u
        created = float(w.arrivals[g])
        end = w.end_s

        # Who is calling, and is it a follow-up of an earlier bad experience?
        followup = False
        if w.followups and w.followups[0][0] <= created:
            _, _, cust, cat_i, sub_i = heapq.heappop(w.followups)
            followup = True
        else:
            cust = int(w.fresh_customer[g])
            cat_i = -1
        incident = u() < w.incident_share[g]
        if not followup:
            if incident:
                cat_i, sub_i = 1, _OUTAGE_SUB
            else:
                cat_i = d.weighted(_CAT_CUM)
                sub_i = d.weighted(_SUB_CUM[cat_i])
        cat = CATEGORIES[cat_i]
        sub = cat.subcategories[sub_i]
        tier = int(w.cust_tier[cust])
        channel = CHANNELS[int(w.cust_channel[cust])] if u() < 0.7 else CHANNELS[d.weighted(_CHANNEL_CUM)]

        # Customer history as of creation (only outcomes that already happened count).
        last, prev = w.cust_last_created[cust], w.cust_prev_created[cust]
        recent = int(created - last < 30 * DAY) + int(created - prev < 30 * DAY)
        same_topic = (w.cust_last_category[cust] == cat_i) and (created - last < 14 * DAY)
        if w.cust_anger_at[cust] <= created:
            carried = w.cust_anger[cust] * 0.5 ** ((created - w.cust_anger_at[cust]) / (14 * DAY))
        else:  # the previous ticket is still running: only older anger is known to the customer
            carried = w.cust_old_anger[cust] * 0.5
        w.cust_prev_created[cust] = last
        w.cust_last_created[cust] = created
        w.cust_last_category[cust] = cat_i

        anger = max(
            0.0,
            0.25
            + 0.3 * d.z()
            + carried
            + 0.5 * followup
            + 0.2 * same_topic
            + (0.35 if cat.name == "complaints" else 0.0),
        )
        legal_intent = u() < (
            0.012
            + 0.05 * (cat.name == "complaints")
            + 0.02 * (cat.name == "billing")
            + 0.05 * (anger > 1.3)
            + 0.04 * followup
        )
        cancel_intent = cat.name == "cancellation" or u() < 0.03 + 0.06 * (anger > 1.2)
        outage = sub.name == "outage"

        # Latent true priority and the noisy typed priority.
        score = (
            sub.impact
            + TIER_IMPACT[tier]
            + 0.9 * legal_intent
            + 0.8 * incident
            + 0.3 * cancel_intent
            + 0.45 * d.z()
        )
        true_p = sum(score > c for c in TRUE_PRIORITY_CUTS)
        r = u()
        if r < 0.65:
            typed = true_p
        else:
            step = 1 if r < 0.93 else 2
            sign = 1 if u() < 0.5 else -1
            typed = true_p + sign * step
            if typed < 0 or typed > 3:
                typed = true_p - sign * step
            typed = min(3, max(0, typed))

        # Text at creation.
        cues: list[str] = []
        if (recent >= 1 and same_topic and u() < 0.55) or (followup and u() < 0.5) or u() < 0.02:
            cues.append(CUES["repeat"][0] if recent >= 2 else d.pick(CUES["repeat"][1:]))
        angry_cue = (anger > 1.2 and u() < 0.55) or (anger > 0.7 and u() < 0.12) or u() < 0.02
        if angry_cue:
            cues.append(d.pick(CUES["anger"]))
        legal_said = legal_intent and u() < 0.5
        if legal_said:
            cues.append(d.pick(CUES["legal"]))
        if cancel_intent and u() < (0.5 if cat.name == "cancellation" else 0.45):
            cues.append(d.pick(CUES["cancel"]))
        if (outage and u() < 0.7) or (cat.name == "technical" and u() < 0.08):
            cues.append(d.pick(CUES["outage"]))
        sup_said = (anger > 1.5 and u() < 0.15) or u() < 0.01
        if sup_said:
            cues.append(d.pick(CUES["supervisor"]))
        subject = d.pick(sub.subjects)
        if angry_cue or (anger > 1.4 and u() < 0.3):
            subject = subject.upper() if u() < 0.3 else subject + "!!"
        description = self.compose_text(d.pick(CALM_OPENERS), [d.pick(sub.descriptions)] + cues)

        # Routing (some tickets land in the wrong frontline team first).
        right_team = cat.team
        misrouted = u() < 0.07
        group = FRONTLINE_TEAMS[int(u() * len(FRONTLINE_TEAMS))] if misrouted else right_team
        misrouted = group != right_team
        agent = self.pick_agent(group, created)
        tenure = tenure0 = self.measure_tenure(agent, created)
        complexity = 1.5 * sub.complexity * math.exp(0.4 * d.z())
        work = 1 + d.poisson(complexity)

        static_risk = (
            cat.risk
            + sub.risk
            + TIER_RISK[tier]
            + 0.6 * followup
            + 0.25 * min(recent, 2)
            + 0.6 * (cancel_intent and cat.name != "cancellation")
        )

        # Ticket state (what rows show).
        priority = PRIORITY_ORDER[typed]
        sla = created + SLA_HOURS[priority] * HOUR
        level = 0
        etype: str | None = None
        status = "new"
        message: str | None = None
        reassign = reopen = amsg = 0
        cmsg = 1
        n_rows = 0
        last_t = -1
        time_based_done = False
        priority_esc_done = False
        agent_turns = 0
        premature = False
        first_esc_time = None

        r_time, r_event, r_priority, r_agent, r_group = (
            self.r_time,
            self.r_event,
            self.r_priority,
            self.r_agent,
            self.r_group,
        )
        r_status, r_message, r_reassign, r_reopen = (
            self.r_status,
            self.r_message,
            self.r_reassign,
            self.r_reopen,
        )
        r_cmsg, r_amsg, r_sla, r_level, r_etype = (
            self.r_cmsg,
            self.r_amsg,
            self.r_sla,
            self.r_level,
            self.r_etype,
        )
        agent_ids = w.agent_ids

        def review_priority(t: float) -> float:
            """At resolution the agent usually sets the priority the case really had (a closing review)."""
            nonlocal priority
            if PRIORITY_ORDER.index(priority) != true_p and u() < CLOSING_REVIEW_P:
                priority = PRIORITY_ORDER[true_p]
                return emit_row("priority_changed", t) + MINUTE
            return t

        def emit_row(event: str, t: float) -> int:
            nonlocal last_t, n_rows
            if t > end:
                raise _WindowEnd
            ts = int(t)
            if ts <= last_t:
                ts = last_t + 1
            last_t = ts
            n_rows += 1
            r_time.append(ts)
            r_event.append(event)
            r_priority.append(priority)
            r_agent.append(agent_ids[agent])
            r_group.append(group)
            r_status.append(status)
            r_message.append(message)
            r_reassign.append(reassign)
            r_reopen.append(reopen)
            r_cmsg.append(cmsg)
            r_amsg.append(amsg)
            r_sla.append(int(sla))
            r_level.append(level)
            r_etype.append(etype)
            return ts

        def escalate(kind: str, t: float) -> float:
            """Apply an escalation of the given kind at time t; return the row's time."""
            nonlocal level, etype, group, agent, status, tenure, priority, sla, anger, work
            nonlocal first_esc_time, time_based_done, priority_esc_done
            level += 1
            etype = kind
            if kind == "functional":
                target = (
                    "legal_team" if legal_intent and cat.specialist != "tech_support_t2" else cat.specialist
                )
                work = max(1, work - 1)  # specialists need fewer steps
            elif kind == "priority":
                target = "tech_support_t2" if outage else ("legal_team" if legal_intent else "supervisors")
                bump = 3 if (outage and incident) or (legal_intent and tier == 2) else 2
                if PRIORITY_ORDER.index(priority) < bump:
                    priority = PRIORITY_ORDER[bump]
                    sla = created + SLA_HOURS[priority] * HOUR
                priority_esc_done = True
            else:
                target = "supervisors"
                if kind == "time_based":
                    time_based_done = True
                anger = max(0.0, anger - 0.3)
            if target == group:
                target = "legal_team" if (group == "supervisors" and legal_intent) else "supervisors"
            group = target
            agent = self.pick_agent(group, t, avoid=agent)
            tenure = self.measure_tenure(agent, t)
            status = "open"
            if first_esc_time is None:
                first_esc_time = t
            return emit_row("escalated", t)

        def compute_tenure_risk() -> float:
            return 0.7 if tenure < 3 else (0.3 if tenure < 12 else 0.0)

        def schedule_agent(t: float, first: bool) -> float:
            base = (FIRST_RESPONSE_MIN if first else AGENT_RESPONSE_MIN)[channel] * MINUTE
            delay = d.lognormal(
                base * PRIORITY_SPEED[PRIORITY_ORDER.index(priority)] * (1.4 if level else 1.0), 0.9
            )
            due = t + delay
            dow = int(((due // DAY) + 3) % 7)  # 1970-01-01 was a Thursday; 0 = Monday
            if dow >= 5:
                due = t + delay * 1.8
            if channel in WRITTEN_CHANNELS:
                hour = (due % DAY) / HOUR
                if (hour >= 21 or hour < 7) and u() < 0.85:
                    next_morning = due - (due % DAY) + (DAY if hour >= 21 else 0) + 7 * HOUR
                    due = next_morning + u() * 2 * HOUR
            return due

        def write_customer_text(chase: bool) -> tuple[str, bool, bool]:
            """The customer's message: base text plus cues that depend on anger and intent."""
            nonlocal legal_said
            cue: list[str] = []
            base = d.pick(CHASER_TEXTS if chase else ANSWER_TEXTS)
            if anger > 0.9 and u() < 0.5:
                cue.append(d.pick(FRUSTRATION_TEXTS))
            if (anger > 1.4 and u() < 0.5) or (anger > 0.9 and u() < 0.12) or u() < 0.015:
                cue.append(d.pick(CUES["anger"]))
            if (cmsg >= 2 and u() < 0.12) or (followup and u() < 0.15):
                cue.append(d.pick(CUES["repeat"][1:]))
            asks_supervisor = (u() < 0.3 / (1 + math.exp(-3.0 * (anger - 2.0)))) or u() < 0.008
            if asks_supervisor:
                cue.append(d.pick(CUES["supervisor"]))
            threatens_legal = (legal_intent and not legal_said and u() < 0.4) or u() < 0.004
            if threatens_legal:
                cue.append(d.pick(CUES["legal"]))
                legal_said = legal_said or legal_intent
            if cancel_intent and u() < 0.15 * anger:
                cue.append(d.pick(CUES["cancel"]))
            if outage and u() < 0.3:
                cue.append(d.pick(CUES["outage"]))
            return self.compose_text(base, cue), asks_supervisor, threatens_legal and legal_intent

        def check_sla_breach(t_from: float, t_to: float) -> float | None:
            """The SLA monitor: a breach while unresolved sometimes escalates on its own."""
            if time_based_done or sla >= t_to or level >= 1:
                return None
            p = (
                TIME_BASED_BY_TIER[tier]
                * (1.6 if priority in ("high", "urgent") else 1.0)
                * (1 + 0.3 * anger)
            )
            if u() >= p:
                return None
            t_e = max(sla, t_from) + (5 + 85 * u()) * MINUTE
            if t_e >= t_to or t_e > end:
                return None
            return escalate("time_based", t_e)

        def record_customer_reply(t: float, chase: bool) -> float:
            """A customer message; a supervisor request or legal threat may escalate right after."""
            nonlocal cmsg, message, status, anger
            cmsg += 1
            anger += 0.12 + (0.15 if chase else 0.0)
            message, asks_sup, legal_now = write_customer_text(chase)
            if status not in ("new", "on_hold"):
                status = "open"
            t = emit_row("customer_reply", t)
            if asks_sup and level < 2 and u() < CUSTOMER_INITIATED_P * (0.5 if level else 1.0):
                t = escalate("customer_initiated", t + (2 + 40 * u()) * MINUTE)
            elif legal_now and not priority_esc_done and u() < 0.35:
                t = escalate("priority", t + (10 + 120 * u()) * MINUTE)
            return t

        # ---- the story --------------------------------------------------------------------
        t = emit_row("created", created)
        anger0 = anger
        creation_priority = typed
        next_agent_first = True
        resolved = False
        outcome_bad = False
        try:  # the window end cuts a ticket short: it stays open in the data
            while True:
                # Wait for an agent; a written-channel customer may chase meanwhile.
                due = schedule_agent(t, next_agent_first)
                waited_h = (due - t) / HOUR
                if (
                    channel in WRITTEN_CHANNELS
                    and waited_h > 3
                    and u() < (1 - math.exp(-waited_h / 20)) * (0.4 + 0.3 * anger)
                ):
                    t_c = t + (0.3 + 0.5 * u()) * (due - t)
                    t_tb = check_sla_breach(t, t_c)
                    if t_tb is not None:
                        t = t_tb
                        continue
                    if t_c > end:
                        break
                    anger += 0.06 * math.log1p(waited_h)
                    level_before = level
                    t = record_customer_reply(t_c, chase=True)
                    if level != level_before:
                        next_agent_first = False
                        continue
                t_tb = check_sla_breach(t, due)
                if t_tb is not None:
                    t = t_tb
                    continue
                if due > end:
                    break
                t = due
                anger += 0.05 * math.log1p(waited_h)
                next_agent_first = False
                agent_turns += 1

                # First touch of a misrouted ticket: transfer to the right team.
                if misrouted:
                    misrouted = False
                    group = right_team
                    agent = self.pick_agent(group, t, avoid=agent)
                    tenure = self.measure_tenure(agent, t)
                    reassign += 1
                    status = "open"
                    anger += 0.15
                    t = emit_row("transfer", t)
                    continue

                # Agent-initiated escalations.
                x = (
                    static_risk
                    + compute_tenure_risk()
                    + ANGER_WEIGHT * anger
                    + 0.25 * max(0, agent_turns - 2)
                    + 0.3 * reassign
                    + 0.5 * reopen
                    + 0.4 * (t > sla)
                )
                damp = 0.08 if level else 1.0
                if not priority_esc_done and agent_turns <= 2 and level == 0:
                    p_pri = (
                        0.18 * legal_said
                        + 0.12 * (outage and incident)
                        + 0.05 * (outage and not incident)
                        + 0.06 * (tier == 2 and true_p >= 2)
                        + 0.015 * (tier == 1 and true_p >= 2)
                    )
                    if u() < p_pri:
                        t = escalate("priority", t)
                        continue
                if u() < min(0.5, HIERARCHICAL_BASE * math.exp(x) * damp):
                    t = escalate("hierarchical", t)
                    continue
                if agent_turns >= 2 and group in FRONTLINE_TEAMS and work >= 2:
                    p_f = FUNCTIONAL_BASE * math.exp(
                        0.5 * complexity + 1.2 * compute_tenure_risk() + 0.3 * static_risk + 0.2 * anger
                    )
                    if u() < min(0.5, p_f):
                        t = escalate("functional", t)
                        continue

                # Priority correction toward the (latent) truth; rarely a wrong change.
                p_now = PRIORITY_ORDER.index(priority)
                if p_now != true_p and u() < 0.12 + 0.1 * (tenure >= 12) + 0.15 * (level > 0):
                    priority = PRIORITY_ORDER[p_now + (1 if true_p > p_now else -1)]
                    sla = created + SLA_HOURS[priority] * HOUR
                    t = emit_row("priority_changed", t) + (1 + 4 * u()) * MINUTE
                elif u() < 0.012:
                    priority = PRIORITY_ORDER[min(3, max(0, p_now + (1 if u() < 0.5 else -1)))]
                    sla = created + SLA_HOURS[priority] * HOUR
                    t = emit_row("priority_changed", t) + (1 + 4 * u()) * MINUTE

                # The agent's action.
                r = u()
                if (channel == "phone" and r < 0.13) or r < 0.03:
                    status = "on_hold"
                    t = emit_row("hold", t)
                    if channel == "phone":
                        t += (3 + 15 * u()) * MINUTE
                        status = "open"
                        anger += 0.1
                        if t > end:
                            break
                        # the agent comes back and answers within the same call
                    else:
                        continue
                elif r < 0.065:
                    agent = self.pick_agent(group, t, avoid=agent)
                    tenure = self.measure_tenure(agent, t)
                    reassign += 1
                    status = "open"
                    anger += 0.15
                    t = emit_row("reassigned", t)
                    continue
                elif channel == "phone" and r < 0.09 and group in FRONTLINE_TEAMS:
                    # Internal transfer: another agent of the team picks up the call.
                    agent = self.pick_agent(group, t, avoid=agent)
                    tenure = self.measure_tenure(agent, t)
                    reassign += 1
                    status = "open"
                    t = emit_row("transfer", t)
                    continue

                amsg += 1
                effective = u() < (0.65 if tenure < 3 else (0.85 if tenure < 12 else 0.95))
                if effective:
                    work -= 1
                    anger = max(0.0, anger - 0.1)
                if work <= 0 or (tenure < 3 and u() < 0.08):
                    premature = work > 0
                    t = review_priority(t)
                    status = "resolved"
                    resolved = True
                    t = emit_row("resolved", t)
                else:
                    waiting_customer = u() < 0.7
                    status = "pending" if waiting_customer else "open"
                    t = emit_row("agent_reply", t)
                    if not waiting_customer:
                        continue
                    # The customer's turn.
                    reply_at = t + d.lognormal(CUSTOMER_RESPONSE_MIN[channel] * MINUTE, 1.0)
                    if u() < 0.1:  # silence: the agent closes it as resolved after a few days
                        reply_at = t + (2 + 2 * u()) * DAY
                        t_tb = check_sla_breach(t, reply_at)
                        if t_tb is not None:
                            t = t_tb
                            continue
                        if reply_at > end:
                            break
                        reply_at = review_priority(reply_at)
                        status = "resolved"
                        resolved = True
                        premature = work > 1
                        t = emit_row("resolved", reply_at)
                    else:
                        t_tb = check_sla_breach(t, reply_at)
                        if t_tb is not None:
                            t = t_tb
                            continue
                        if reply_at > end:
                            break
                        t = record_customer_reply(reply_at, chase=False)
                        continue

                # Resolved: reopen or close.
                fading = 0.5**reopen  # each reopen makes another one less likely
                if (premature and u() < 0.6 * fading) or u() < (0.04 + 0.04 * (anger > 1.5)) * fading:
                    t_r = t + (0.3 + 4 * u()) * DAY
                    if t_r > end:
                        break
                    status = "open"
                    reopen += 1
                    cmsg += 1
                    anger += 0.5
                    message = self.compose_text(
                        d.pick(REOPEN_TEXTS), [d.pick(CUES["anger"])] if anger > 1.3 and u() < 0.5 else []
                    )
                    resolved = False
                    outcome_bad = True
                    work = max(work, 1) + d.poisson(0.5)
                    premature = False
                    t = emit_row("reopened", t_r)
                    continue
                t_close = t + (1 + 2 * u()) * DAY
                if t_close <= end:
                    status = "closed"
                    t = emit_row("closed", t_close)
                break
        except _WindowEnd:
            pass

        # Per-ticket columns and latent truth.
        width = max(8, len(str(len(w.arrivals))))
        tid = f"T{ticket_no:0{width}d}"
        self.t_id.append(tid)
        self.t_created.append(created)
        self.t_channel.append(channel)
        self.t_category.append(cat.name)
        self.t_sub.append(sub.name)
        self.t_customer.append(w.cust_ids[cust])
        self.t_tier.append(TIERS[tier])
        self.t_subject.append(subject)
        self.t_description.append(description)
        self.t_rows.append(n_rows)
        truth = self.truth
        truth["ticket_id"].append(tid)
        truth["true_priority"].append(PRIORITY_ORDER[true_p])
        truth["creation_priority"].append(PRIORITY_ORDER[creation_priority])
        truth["is_followup"].append(followup)
        truth["incident"].append(incident)
        truth["anger_at_creation"].append(anger0)
        truth["agent_tenure_months"].append(tenure0)
        truth["complexity"].append(complexity)

        # Customer memory: anger and the urge to call back, effective from when they happen.
        bad_time = (
            first_esc_time if first_esc_time is not None else (t if outcome_bad or anger > 1.2 else None)
        )
        finished_at = float(last_t)
        w.cust_old_anger[cust] = carried
        w.cust_anger[cust] = 0.6 * anger
        w.cust_anger_at[cust] = finished_at
        if bad_time is not None:
            reason = "escalated" if first_esc_time is not None else ("reopened" if outcome_bad else "angry")
            if u() < FOLLOWUP_P[reason] * (1.3 if not resolved else 1.0):
                due_back = max(bad_time, finished_at if resolved else bad_time) + d.lognormal(3 * DAY, 0.8)
                w.followup_seq += 1
                heapq.heappush(w.followups, (due_back, w.followup_seq, cust, cat_i, sub_i))

    # -- output --------------------------------------------------------------------------

    def build_table(self) -> pa.Table:
        """One arrow table with exactly the canonical columns, types and order."""
        repeat = np.repeat(np.arange(len(self.t_id)), np.asarray(self.t_rows, dtype=np.int64))
        take = pa.array(repeat)

        def per_ticket(values: list, typ: pa.DataType) -> pa.Array:
            return pa.array(values, type=typ).take(take)

        created_ns = np.asarray(self.t_created, dtype=np.int64) * 1_000_000_000
        columns = {
            "ticket_id": per_ticket(self.t_id, pa.string()),
            "event_time": pa.array(
                np.asarray(self.r_time, dtype=np.int64) * 1_000_000_000,
                type=ARROW_SCHEMA.field("event_time").type,
            ),
            "created_at": pa.array(created_ns, type=ARROW_SCHEMA.field("created_at").type).take(take),
            "event_type": pa.array(self.r_event, type=pa.string()),
            "channel": per_ticket(self.t_channel, pa.string()),
            "category": per_ticket(self.t_category, pa.string()),
            "subcategory": per_ticket(self.t_sub, pa.string()),
            "priority": pa.array(self.r_priority, type=pa.string()),
            "customer_id": per_ticket(self.t_customer, pa.string()),
            "customer_tier": per_ticket(self.t_tier, pa.string()),
            "agent_id": pa.array(self.r_agent, type=pa.string()),
            "group": pa.array(self.r_group, type=pa.string()),
            "status": pa.array(self.r_status, type=pa.string()),
            "subject": per_ticket(self.t_subject, pa.string()),
            "description": per_ticket(self.t_description, pa.string()),
            "last_customer_message": pa.array(self.r_message, type=pa.string()),
            "reassignment_count": pa.array(self.r_reassign, type=pa.int64()),
            "reopen_count": pa.array(self.r_reopen, type=pa.int64()),
            "customer_messages": pa.array(self.r_cmsg, type=pa.int64()),
            "agent_messages": pa.array(self.r_amsg, type=pa.int64()),
            "sla_due_at": pa.array(
                np.asarray(self.r_sla, dtype=np.int64) * 1_000_000_000,
                type=ARROW_SCHEMA.field("sla_due_at").type,
            ),
            "escalation_level": pa.array(self.r_level, type=pa.int64()),
            "escalation_type": pa.array(self.r_etype, type=pa.string()),
        }
        return pa.Table.from_arrays([columns[c] for c in CANONICAL_COLUMNS], schema=ARROW_SCHEMA)

    def build_truth_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.truth)


_TS = pa.timestamp("ns", tz="UTC")
_ARROW_TYPES = {
    "event_time": _TS,
    "created_at": _TS,
    "sla_due_at": _TS,
    "reassignment_count": pa.int64(),
    "reopen_count": pa.int64(),
    "customer_messages": pa.int64(),
    "agent_messages": pa.int64(),
    "escalation_level": pa.int64(),
}
ARROW_SCHEMA = pa.schema([pa.field(c, _ARROW_TYPES.get(c, pa.string())) for c in CANONICAL_COLUMNS])


def _simulate_chunks(
    n_tickets: int, seed: int, start: str, months: int, chunk_tickets: int
) -> Iterator[_ChunkSimulator]:
    """Simulate tickets in global arrival order, chunk by chunk; customers persist across chunks."""
    if n_tickets < 1:
        raise ValueError(f"n_tickets must be at least 1, got {n_tickets}")
    if months < 1:
        raise ValueError(f"months must be at least 1, got {months}")
    if chunk_tickets < 1:
        raise ValueError(f"chunk_tickets must be at least 1, got {chunk_tickets}")
    world = _build_world(n_tickets, seed, start, months)
    for chunk_index, first in enumerate(range(0, n_tickets, chunk_tickets)):
        sim = _ChunkSimulator(world, _Draws(np.random.default_rng([seed, 1, chunk_index])))
        for g in range(first, min(first + chunk_tickets, n_tickets)):
            sim.simulate_ticket(g + 1, g)
        yield sim


def _simulate_with_truth(
    n_tickets: int = 2000, seed: int = 42, start: str = "2025-01-01", months: int = 12
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The event log plus one row per ticket of latent truth (true priority, ...), for tests only."""
    sim = next(_simulate_chunks(n_tickets, seed, start, months, chunk_tickets=n_tickets))
    return sim.build_table().to_pandas(), sim.build_truth_frame()


def simulate_events(
    n_tickets: int = 2000, seed: int = 42, start: str = "2025-01-01", months: int = 12
) -> pd.DataFrame:
    """Small in-memory version for tests (same simulator, one chunk)."""
    return _simulate_with_truth(n_tickets, seed, start, months)[0]


def describe_agents(n_tickets: int = 20_000, seed: int = 42, start: str = "2025-01-01", months: int = 12
                    ) -> pd.DataFrame:
    """The simulated agents behind `generate_event_log` with the same arguments (latent truth, for
    tests and checks only): agent_id, team, hired_at (UTC). About 15 % are hired during the window;
    an agent's tenure at a ticket raises its escalation hazard (+0.7 under 3 months, +0.3 under 12)."""
    world = _build_world(n_tickets, seed, start, months)
    team = {agent: name for name, members in world.team_agents.items() for agent in members}
    return pd.DataFrame({
        "agent_id": world.agent_ids,
        "team": [team[i] for i in range(len(world.agent_ids))],
        "hired_at": pd.to_datetime(world.agent_hired, unit="s", utc=True).floor("s"),
    })


def generate_event_log(
    output_path: Path,
    n_tickets: int = 20_000,
    seed: int = 42,
    fmt: str = "parquet",
    start: str = "2025-01-01",
    months: int = 12,
    chunk_tickets: int = 50_000,
    progress: bool = False,
) -> dict:
    """Write the demo event log; return a summary dict (tickets, rows, escalation_rate, seconds, path).

    Chunks are written as they are simulated (one parquet row group or CSV block each), so
    memory stays bounded by the chunk size, not by n_tickets.
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    began = time.perf_counter()
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    n_chunks = -(-n_tickets // max(chunk_tickets, 1))
    chunks = _simulate_chunks(n_tickets, seed, start, months, chunk_tickets)
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=n_tickets, unit="ticket", desc="simulating")
        except ImportError:  # progress is a nicety, not a dependency
            bar = None
    rows = tickets = escalated = 0
    writer = None
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            writer = pq.ParquetWriter(output_path, ARROW_SCHEMA, compression="zstd")
        else:
            import pyarrow.csv as pacsv

            csv_schema = pa.schema(
                [pa.field(f.name, pa.timestamp("s", tz="UTC")) if f.type == _TS else f for f in ARROW_SCHEMA]
            )
            writer = pacsv.CSVWriter(str(output_path), csv_schema)
        for sim in chunks:
            table = sim.build_table()
            if fmt == "csv":
                table = table.cast(csv_schema)
            writer.write_table(table)
            level = np.asarray(sim.r_level)
            ends = np.cumsum(sim.t_rows) - 1
            escalated += int((level[ends] > 0).sum())
            rows += table.num_rows
            tickets += len(sim.t_id)
            if bar is not None:
                bar.update(len(sim.t_id))
    finally:
        if writer is not None:
            writer.close()
        if bar is not None:
            bar.close()
    return {
        "tickets": tickets,
        "rows": rows,
        "escalation_rate": round(escalated / max(tickets, 1), 4),
        "seconds": round(time.perf_counter() - began, 2),
        "path": str(output_path),
        "format": fmt,
        "chunks": n_chunks,
    }


# ---------------------------------------------------------------------------------------------
# A vendor-shaped export of the same simulation, for trying the importer and mapping files on
# an export the project has never seen (docs/mapping-files.md walks one from init-mapping on).
# ---------------------------------------------------------------------------------------------

EXPORT_STATUS = {  # canonical status -> (Status, Sub Status), a service desk's two-level state
    "new": ("Queued", "Awaiting Assignment"),
    "open": ("Accepted", "In Progress"),
    "pending": ("Accepted", "Wait - User"),
    "on_hold": ("Accepted", "Wait - Vendor"),
    "resolved": ("Completed", "Resolved"),
    "closed": ("Completed", "Closed"),
}
EXPORT_LEVELS = ("L1", "L2", "L3")


@dataclass(frozen=True)
class ExportOptions:
    """How the simulated export departs from the canonical log (each a habit of real exports).

    text_levels: the escalation level as support-level text (L1/L2/L3), handed back to L1 on
    resolution in `hand_back_share` of escalated tickets; drop_priority / drop_created_at: no
    priority and no opening-time column; timezone: local wall-clock times in this IANA zone,
    written with their offset (`offsets`) or without (naive, DST and all); reopen_closed_share:
    closed tickets reopened days later (and closed again), a share of them escalating on the
    reopened stretch; n_products / n_team_cells: high-cardinality product and team columns,
    products carrying part of the escalation risk; zero-padded numeric ticket ids.
    """

    text_levels: bool = True
    hand_back_share: float = 0.5
    drop_priority: bool = True
    drop_created_at: bool = True
    timezone: str | None = "Europe/Amsterdam"
    offsets: bool = True
    reopen_closed_share: float = 0.08
    reopen_escalation_share: float = 0.3
    n_products: int = 700
    n_team_cells: int = 60


def _reopen_closed(events: pd.DataFrame, options: ExportOptions, rng: np.random.Generator,
                   end: pd.Timestamp) -> pd.DataFrame:
    """Reopen a share of closed tickets after their close: a reopened row, maybe an escalation, a new close."""
    last = events.groupby("ticket_id", sort=False).tail(1)
    closed = last[last["status"] == "closed"]
    chosen = closed[rng.random(len(closed)) < options.reopen_closed_share]
    hours = pd.to_timedelta(12 + 96 * rng.random(len(chosen)), unit="h")
    reopened = chosen.assign(event_time=chosen["event_time"] + hours, event_type="reopened", status="open",
                             reopen_count=chosen["reopen_count"] + 1,
                             customer_messages=chosen["customer_messages"] + 1)
    escalates = rng.random(len(chosen)) < options.reopen_escalation_share
    escalated = reopened[escalates]
    escalated = escalated.assign(
        event_time=escalated["event_time"] + pd.to_timedelta(1 + 24 * rng.random(len(escalated)), unit="h"),
        event_type="escalated", escalation_level=escalated["escalation_level"] + 1,
        escalation_type="hierarchical", group="supervisors")
    latest = pd.concat([reopened[~escalates], escalated])
    again = latest.assign(event_time=latest["event_time"] + pd.to_timedelta(24 + 48 * rng.random(len(latest)), unit="h"),
                          event_type="closed", status="closed")
    extra = pd.concat([reopened, escalated, again])
    extra = extra[extra["event_time"] <= end]
    if extra.empty:
        return events
    out = pd.concat([events, extra], ignore_index=True)
    return out.sort_values(["ticket_id", "event_time"], kind="stable").reset_index(drop=True)


def _format_local(times: pd.Series, timezone: str | None, offsets: bool) -> pd.Series:
    """UTC times as the export writes them: ISO with the local offset, or naive local wall-clock time."""
    known = times.notna().to_numpy()
    local = times.dt.tz_convert(timezone or "UTC").dt.tz_localize(None)
    text = np.datetime_as_string(local.to_numpy().astype("datetime64[s]"), unit="s")
    if offsets:
        minutes = ((local - times.dt.tz_localize(None)) / pd.Timedelta(minutes=1)).fillna(0).astype(int).to_numpy()
        sign = np.where(minutes < 0, "-", "+")
        suffix = np.char.add(sign, np.char.add(np.char.zfill((np.abs(minutes) // 60).astype(str), 2),
                                               np.char.add(":", np.char.zfill((np.abs(minutes) % 60).astype(str), 2))))
        text = np.char.add(text, suffix)
    else:
        text = np.char.replace(text, "T", " ")
    return pd.Series(np.where(known, text, None), index=times.index, dtype="string")


def simulate_export(n_tickets: int = 2000, seed: int = 42, start: str = "2025-01-01", months: int = 12,
                    options: ExportOptions | None = None) -> pd.DataFrame:
    """The simulation written as a service-desk export: one row per update, the export's own column
    names and habits (ExportOptions). The truth behind it is the canonical log of simulate_events."""
    options = options or ExportOptions()
    rng = np.random.default_rng([seed, 7])
    events = simulate_events(n_tickets, seed, start, months)
    end = pd.Timestamp(start, tz="UTC") + pd.DateOffset(months=months)
    if options.reopen_closed_share > 0:
        events = _reopen_closed(events, options, rng, end)
    tickets = events["ticket_id"].to_numpy()
    first = np.r_[True, tickets[1:] != tickets[:-1]]
    escalated = events.groupby("ticket_id", sort=False)["escalation_level"].transform("max") > 0
    # Products: each subcategory's own range; escalated tickets lean to the riskier ones.
    subcategories = sorted(events["subcategory"].dropna().unique())
    per = max(1, options.n_products // max(len(subcategories), 1))
    product_risk = rng.normal(0, 1.0, per * len(subcategories))
    weight = rng.pareto(1.5, per * len(subcategories)) + 0.1
    first_rows = events.loc[first, ["ticket_id", "subcategory"]]
    esc_first = escalated[first].to_numpy()
    picks = []
    for sub, is_esc in zip(first_rows["subcategory"].to_numpy(), esc_first, strict=True):
        base = subcategories.index(sub) * per
        w = weight[base:base + per] * (np.exp(product_risk[base:base + per]) if is_esc else 1.0)
        picks.append(f"PROD{base + rng.choice(per, p=w / w.sum()):04d}")
    product = pd.Series(picks, index=first_rows["ticket_id"].to_numpy(), dtype="string")
    # Teams: each group split into cells by product line (the team a product's tickets go to).
    cell = events["ticket_id"].map(product).str[4:].astype(int) % options.n_team_cells
    ticket_numbers = pd.Series(tickets).str.extract(r"(\d+)$")[0].astype(int).to_numpy()
    status = events["status"].map(lambda s: EXPORT_STATUS.get(s, ("Accepted", "In Progress")))
    out = pd.DataFrame({
        "Incident ID": [f"{n:08d}" for n in ticket_numbers],
        "Changed At": _format_local(events["event_time"], options.timezone, options.offsets),
        "Opened At": _format_local(events["created_at"], options.timezone, options.offsets),
        "Status": status.str[0],
        "Sub Status": status.str[1],
        "Channel": events["channel"].str.title(),
        "Category": events["category"],
        "Subcategory": events["subcategory"],
        "Product": events["ticket_id"].map(product),
        "Priority": events["priority"],
        "Customer": events["customer_id"],
        "Customer Tier": events["customer_tier"],
        "Assignee": events["agent_id"],
        "Team": events["group"].astype("string") + "-" + cell.astype("string"),
        "Summary": events["subject"],
        "Description": events["description"],
        "Last Customer Message": events["last_customer_message"],
        "Reassignments": events["reassignment_count"],
        "Reopens": events["reopen_count"],
        "Customer Messages": events["customer_messages"],
        "Agent Messages": events["agent_messages"],
        "Due At": _format_local(events["sla_due_at"], options.timezone, options.offsets),
        "Update Type": events["event_type"],
    })
    level = events["escalation_level"].clip(upper=len(EXPORT_LEVELS) - 1)
    if options.text_levels:
        hand_back = pd.Series(rng.random(len(np.unique(tickets))) < options.hand_back_share,
                              index=pd.unique(tickets))
        back = (events["ticket_id"].map(hand_back) & escalated
                & events["status"].isin(["resolved", "closed"])).to_numpy()
        out["Support Level"] = np.where(back, EXPORT_LEVELS[0], np.asarray(EXPORT_LEVELS)[level.to_numpy()])
    else:
        out["Support Level"] = level.to_numpy()
    drop = [c for c, gone in (("Priority", options.drop_priority), ("Opened At", options.drop_created_at)) if gone]
    return out.drop(columns=drop)
