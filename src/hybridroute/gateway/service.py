"""The gateway service: a chat request in, an answer (from the cache or a route) out. No HTTP.

One request goes through these steps, each a method the API layer calls in turn:

1. `prepare()` — the operation's rule, a decision id, the route-independent
   `GenerationRequest` (the operation's system prompt, temperature and max tokens applied), the
   tenant's budget view, and what the response cache does for it;
2. `cached()` — the cached answer, if any. A hit is served before any route is decided: it
   costs nothing, so even a request the budget would refuse gets it;
3. `decide()` — the pure policy over rule, health, flags, budget, residency and clock;
4. `complete()` / `open_stream()` — reserve the worst-case cost against the tenant's budgets,
   hand the decision to the executor, then settle the reservation to what the attempts cost
   and store a successful answer in the cache.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TypeVar

from hybridroute._clock import Clock
from hybridroute.caching import CachedResponse, StreamRecorder
from hybridroute.compliance.subjects import SubjectRegistry
from hybridroute.config.schema import OperationParams
from hybridroute.economics import CostLedger, PriceTable, Reservation
from hybridroute.errors import RequestError
from hybridroute.gateway.accounting import Accountant
from hybridroute.gateway.attempts import AttemptLog
from hybridroute.gateway.cache import CacheLookup, ResponseCache
from hybridroute.gateway.executor import Executor, Served
from hybridroute.gateway.metered import MeteredStream
from hybridroute.gateway.tenants import TenantDirectory
from hybridroute.observability.events import RequestEvent
from hybridroute.providers import Route
from hybridroute.resilience.health import HealthBoard
from hybridroute.routing.flags import FlagStore
from hybridroute.routing.matrix import RoutingMatrix, RoutingRule, Topology
from hybridroute.routing.policy import Decision, decide
from hybridroute.signals import NO_OVERRIDES, BudgetLevel, BudgetView, Overrides
from hybridroute.storage.records import ChargeRecord
from hybridroute.types import ChatRequest, GenerationRequest, RouteId, StreamEnd

__all__ = ["DEFAULT_MAX_TOKENS", "Answer", "Bill", "DecisionIds", "Gateway", "Prepared"]

log = logging.getLogger("hybridroute.gateway")

DEFAULT_MAX_TOKENS = 1024
_NO_PARAMS = OperationParams()
T = TypeVar("T")


class DecisionIds:
    """Decision ids: a random per-process prefix and a counter (cheap, unique, sortable)."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"dec-{self._prefix}-{next(self._counter):08x}"


@dataclass(slots=True)
class Bill:
    """What a request was charged, whichever way it ended (its attempts' charges summed)."""

    cost: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, charges: Sequence[ChargeRecord]) -> None:
        for charge in charges:
            self.cost += charge.cost
            self.input_tokens += charge.input_tokens
            self.output_tokens += charge.output_tokens


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request ready to be looked up in the cache and decided. `bill` fills in as its
    attempts are charged."""

    chat: ChatRequest
    rule: RoutingRule
    generation: GenerationRequest
    budget: BudgetView
    cache: CacheLookup
    bill: Bill = field(default_factory=Bill)

    @property
    def decision_id(self) -> str:
        return self.generation.decision_id

    @property
    def cost_controls(self) -> bool:
        """Emergency cost controls are on for this request's tenant (budget ≥ 95 %)."""
        return self.budget.level.value >= BudgetLevel.CRITICAL.value


@dataclass(frozen=True, slots=True)
class Answer:
    """A request served by a route, and what it cost (every charged attempt)."""

    served: Served
    cost: Decimal
    cache: CacheLookup


class Gateway:
    """Decides, serves, charges and caches chat requests."""

    def __init__(  # noqa: PLR0913 - the service's collaborators, wired by the runtime
        self,
        *,
        matrix: RoutingMatrix,
        topology: Topology,
        flags: FlagStore,
        health: HealthBoard,
        executor: Executor,
        operations: Mapping[str, OperationParams],
        clock: Clock,
        routes: Mapping[RouteId, Route],
        accountant: Accountant,
        cache: ResponseCache,
        tenants: TenantDirectory,
        max_output_tokens: int | None = None,
        tenant_residency: Mapping[str, str] | None = None,
    ) -> None:
        self.matrix = matrix
        self.topology = topology
        self.flags = flags
        self.health = health
        self.accountant = accountant
        self.cache = cache
        self.tenants = tenants
        self.max_output_tokens = max_output_tokens
        self.clock = clock
        # Wall time at start plus monotonic time since: request events are stamped with it, so
        # a wall-clock step (NTP, an operator) cannot scatter them across the traffic window.
        self._steady_epoch = clock.now() - clock.monotonic()
        self._observers: list[Callable[[RequestEvent], None]] = []
        self._executor = executor
        self._operations = dict(operations)
        self._clock = clock
        self._routes = dict(routes)
        self._ids = DecisionIds()
        self._cheaper = self._cheaper_routes(accountant.prices)
        self._tenant_residency = dict(tenant_residency or {})
        self.overrides: Callable[[], Overrides] = lambda: NO_OVERRIDES
        self.subjects: SubjectRegistry | None = None

    def use_matrix(self, matrix: RoutingMatrix) -> None:
        """Decide with `matrix` from the next request on (decisions made keep their rule)."""
        self.matrix = matrix
        self._cheaper = self._cheaper_routes(self.accountant.prices)

    def residency_for(self, chat: ChatRequest) -> str | None:
        """The region set a request is held to: its tenant's policy, or what it asked for. A
        request may narrow its tenant's policy to a subset, never widen it."""
        policy = self._tenant_residency.get(chat.tenant)
        asked = chat.residency
        if policy is None or asked is None or asked == policy:
            return policy or asked
        sets = self.topology.region_sets
        if asked in sets and policy in sets and sets[asked] <= sets[policy]:
            return asked
        raise RequestError(
            f"tenant {chat.tenant!r} is held to residency {policy!r}; the request asked for "
            f"{asked!r}, which is not within it — leave the residency out or name a subset of "
            f"{policy!r}",
            param="residency",
        )

    def now(self) -> float:
        """Steady wall-clock time: the wall time at start, advanced by monotonic time."""
        return self._steady_epoch + self.clock.monotonic()

    def add_observer(self, observer: Callable[[RequestEvent], None]) -> None:
        """Hear every finished request (metrics, the SLO window, tracing)."""
        self._observers.append(observer)

    def observe(self, event: RequestEvent) -> None:
        """A request ended: tell every observer (each is O(1) and must not raise)."""
        for observer in self._observers:
            try:
                observer(event)
            except Exception:  # an observer's bug must not fail the request
                log.exception("request observer failed")

    @property
    def ledger(self) -> CostLedger:
        return self.accountant.ledger

    def _cheaper_routes(self, prices: PriceTable) -> dict[str, RouteId | None]:
        """Per operation type, the strictly cheaper of its primary and fallback (if any)."""
        cheaper: dict[str, RouteId | None] = {}
        for op, rule in self.matrix.rules.items():
            routes = [r for r in (rule.primary, rule.fallback) if r is not None]
            models = {r: self._routes[r].model_for(op) for r in routes}
            cheaper[op] = prices.cheapest(models)
        return cheaper

    # -- 1. prepare ------------------------------------------------------------------------------

    def prepare(self, chat: ChatRequest) -> Prepared:
        """Rule, decision id, generation request, budget view and cache plan of a request. The
        request's residency becomes the one it is held to (its tenant's policy applied), so the
        cache scope and the decision agree."""
        rule = self.matrix.rule_for(chat.operation_type)
        residency = self.residency_for(chat)
        if residency != chat.residency:
            chat = replace(chat, residency=residency)
        generation = self._generation(chat, rule, self._ids.next())
        budget = self.ledger.view(chat.tenant, self._cheaper.get(rule.operation_type))
        controls = budget.level.value >= BudgetLevel.CRITICAL.value
        lookup = self.cache.prepare(chat, generation, cost_controls=controls)
        return Prepared(chat, rule, generation, budget, lookup)

    def _generation(
        self, request: ChatRequest, rule: RoutingRule, decision_id: str
    ) -> GenerationRequest:
        params = self._operations.get(request.operation_type, _NO_PARAMS)
        system: list[str] = []
        if params.system_prompt:
            system.append(params.system_prompt)
        system.extend(m.content for m in request.messages if m.role == "system")
        return GenerationRequest(
            operation_type=request.operation_type,
            priority=rule.priority,
            system=tuple(system),
            messages=tuple(m for m in request.messages if m.role != "system"),
            max_tokens=request.max_tokens or params.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=request.temperature
            if request.temperature is not None
            else params.temperature,
            top_p=request.top_p if request.top_p is not None else params.top_p,
            stop=request.stop,
            decision_id=decision_id,
            requested_model=request.model,
        )

    async def pseudonymise(self, chat: ChatRequest) -> ChatRequest:
        """The request with its data subject replaced by the subject's pseudonym (or dropped
        when no registry keeps pseudonyms): the subject itself goes no further."""
        if chat.subject is None:
            return chat
        pseudonym = await self.subjects.resolve(chat.subject) if self.subjects else None
        return replace(chat, subject=pseudonym)

    # -- 2. the cache ----------------------------------------------------------------------------

    async def cached(self, prepared: Prepared) -> CachedResponse | None:
        """The cached answer for this request, if the cache has one."""
        return await self.cache.lookup(prepared.cache, prepared.chat)

    # -- 3. decide -------------------------------------------------------------------------------

    def decide(self, prepared: Prepared) -> Decision:
        """The policy's decision (may refuse: budget, residency)."""
        chat = prepared.chat
        return decide(
            prepared.rule,
            topology=self.topology,
            health=self.health.view(),
            flags=self.flags.current(),
            now=self._clock.monotonic(),
            decision_id=prepared.decision_id,
            budget=prepared.budget,
            residency=chat.residency,  # the one it is held to, settled in prepare()
            requested_budget_ms=chat.latency_budget_ms,
            overrides=self.overrides(),
        )

    def preview(self, rule: RoutingRule, residency: str | None = None) -> Decision:
        """How a request of `rule` would be decided now (health, flags, operator overrides;
        no budget pressure): for validation and dry runs."""
        return decide(
            rule,
            topology=self.topology,
            health=self.health.view(),
            flags=self.flags.current(),
            now=self._clock.monotonic(),
            decision_id="preview",
            residency=residency,
            overrides=self.overrides(),
        )

    # -- 4. serve --------------------------------------------------------------------------------

    async def _reserved(
        self,
        prepared: Prepared,
        decision: Decision,
        start: Callable[[Decision, GenerationRequest, AttemptLog], Awaitable[T]],
    ) -> tuple[T, Reservation | None]:
        """Reserve the request's worst case, then run `start`. When it fails — no route served,
        a request fault, the client left — settle the reservation to what its attempts may have
        cost (timed out, cancelled, or still running) and re-raise."""
        chat, generation = prepared.chat, prepared.generation
        accountant = self.accountant
        reservation = await accountant.reserve(decision, generation, chat.tenant)
        log = AttemptLog()
        try:
            return await start(decision, generation, log), reservation
        except BaseException:
            charges = accountant.charges(
                generation, chat.tenant, log.done(), in_flight=log.in_flight()
            )
            prepared.bill.add(charges)
            await accountant.settle(reservation, charges)
            raise

    async def complete(self, prepared: Prepared, decision: Decision) -> Answer:
        """Serve as one completion: reserve, execute, settle, cache."""
        chat, generation = prepared.chat, prepared.generation
        accountant = self.accountant
        served, reservation = await self._reserved(prepared, decision, self._executor.complete)
        completion = served.completion
        charges = accountant.charges(
            generation,
            chat.tenant,
            served.attempts,
            served=(served.route, completion.model, completion.usage),
        )
        prepared.bill.add(charges)
        cost = await accountant.settle(reservation, charges)
        lookup = prepared.cache
        if lookup.write:
            entry = CachedResponse(
                chunks=(completion.text,),
                model=completion.model,
                finish_reason=completion.finish_reason,
                usage=completion.usage,
                route=served.route,
                region=self._routes[served.route].region,
                cost=cost,
                created_at=self._clock.now(),
            )
            await self._keep(lookup, chat, entry)
        return Answer(served, cost, lookup)

    async def _keep(self, lookup: CacheLookup, chat: ChatRequest, entry: CachedResponse) -> None:
        """Store an answer in the cache; a cache that fails costs the answer nothing."""
        try:
            await self.cache.store_answer(lookup, chat, entry)
        except Exception:  # the answer is paid for and on its way: log, do not fail it
            log.exception("could not store an answer in the response cache")

    async def open_stream(self, prepared: Prepared, decision: Decision) -> MeteredStream:
        """Start a stream: reserve, open (fallback or hedge until the first event), and settle
        and cache when it ends."""
        chat, generation = prepared.chat, prepared.generation
        accountant = self.accountant
        opened, reservation = await self._reserved(prepared, decision, self._executor.open_stream)
        attempts = opened.attempts
        route, model = opened.route, opened.model
        lookup = prepared.cache

        async def finished(
            relayed: int, end: StreamEnd | None, recorder: StreamRecorder | None
        ) -> Decimal:
            if end is None:
                charges = accountant.charges(
                    generation, chat.tenant, attempts, cut=(route, model, relayed), stream=True
                )
                prepared.bill.add(charges)
                return await accountant.settle(reservation, charges)
            charges = accountant.charges(
                generation, chat.tenant, attempts, served=(route, model, end.usage), stream=True
            )
            prepared.bill.add(charges)
            cost = await accountant.settle(reservation, charges)
            if recorder is not None and not recorder.overflowed:
                entry = recorder.finish(
                    model=model,
                    finish_reason=end.finish_reason,
                    usage=end.usage,
                    route=route,
                    region=self._routes[route].region,
                    cost=cost,
                    created_at=self._clock.now(),
                )
                await self._keep(lookup, chat, entry)
            return cost

        record = self.cache.max_entry_bytes if lookup.write else None
        return MeteredStream(opened, finished, record_for_cache=record)
