package usage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/zapgate/caddy-zapier/gateway"
)

// Zapier's task costs: a successful action run is one task; a successful
// MCP tool call two, a failed one none (Zapier's MCP documentation).
const (
	DefaultRunTasks = 1
	DefaultMCPTasks = 2
)

// Namer names tenants and users at rest (gateway.Namespace).
type Namer interface {
	TenantName(ctx context.Context, tenant string) (string, error)
	Name(ctx context.Context, id gateway.Identity) (string, error)
}

// Config is a Meter's settings.
type Config struct {
	Backend Backend
	Names   Namer
	// Retention of the buckets; default DefaultRetention.
	Retention time.Duration
	// Task costs (the defaults are the caller's to fill: 0 is free).
	RunTasks, MCPTasks int64
	Quotas             Quotas
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// OnThreshold hears, once per tenant per quota period on every gateway
	// sharing the backend, that a tenant reached 80 % or 100 % of its quota.
	OnThreshold func(ThresholdEvent)
	// OnError hears of a backend failure (counts are then lost and the
	// quota is not enforced for that call: usage never stops traffic).
	OnError func(op string, err error)
}

// Meter counts usage and enforces the quotas: the one Recorder every
// capability reports to.
type Meter struct {
	cfg Config

	mu      sync.Mutex
	pending map[gateway.Identity][]Reservation // reservations of calls that carry no tickets (see ObserveMCP)
}

// New returns a meter; Backend and Names are required.
func New(cfg Config) (*Meter, error) {
	if cfg.Backend == nil || cfg.Names == nil {
		return nil, errors.New("usage: Backend and Names are required")
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.RunTasks < 0 || cfg.MCPTasks < 0 {
		return nil, errors.New("usage: task costs must not be negative")
	}
	if err := cfg.Quotas.Check(cfg.Retention); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Meter{cfg: cfg}, nil
}

// Config returns the meter's settings.
func (m *Meter) Config() Config { return m.cfg }

func (m *Meter) failed(op string, err error) {
	metrics.errors.Inc()
	if m.cfg.OnError != nil {
		m.cfg.OnError(op, err)
	}
}

// names are id's keyed names (user "" when id has none).
func (m *Meter) names(ctx context.Context, id gateway.Identity) (tenant, user string, err error) {
	if tenant, err = m.cfg.Names.TenantName(ctx, id.Tenant); err != nil {
		return "", "", err
	}
	if id.User != "" {
		if user, err = m.cfg.Names.Name(ctx, id); err != nil {
			return "", "", err
		}
	}
	return tenant, user, nil
}

// Count adds d to id's current bucket (id.User may be "": the tenant's
// total only).
func (m *Meter) Count(ctx context.Context, id gateway.Identity, d Counts) {
	if d.IsZero() || id.Tenant == "" {
		return
	}
	ctx = context.WithoutCancel(ctx)
	tenant, user, err := m.names(ctx, id)
	if err == nil {
		err = m.cfg.Backend.Add(ctx, tenant, user, HourOf(m.cfg.Now()), d)
	}
	if err != nil {
		m.failed("count", err)
	}
}

// Reservation is tasks taken ahead of a call: given back with Release when
// the call fails.
type Reservation struct {
	tenant, user string
	hour         Hour
	n            int64
	// For the threshold events, sent once the call succeeded: whose, the
	// quota, and the tasks in its window with this reservation.
	id    gateway.Identity
	quota Limit
	used  int64
}

// QuotaExceeded is the answer to a call past the tenant's quota.
func QuotaExceeded(l Limit, retry time.Duration) *gateway.Error {
	return &gateway.Error{Status: http.StatusTooManyRequests, Code: "quota_exceeded", RetryAfter: min(retry, gateway.MaxRetryAfter),
		Message: "the tenant's task quota (" + l.String() + ") is spent; retry after " + strconv.Itoa(int((retry+time.Second-1)/time.Second)) + "s"}
}

// Reserve takes n tasks for id before a call: within the tenant's quota,
// or a *gateway.Error 429 quota_exceeded with Retry-After until the rolling
// window has room. Without a quota the tasks are simply counted. A backend
// failure lets the call go (counted nowhere).
func (m *Meter) Reserve(ctx context.Context, id gateway.Identity, n int64) (Reservation, bool, error) {
	if n <= 0 {
		return Reservation{}, false, nil
	}
	ctx = context.WithoutCancel(ctx)
	tenant, user, err := m.names(ctx, id)
	if err != nil {
		m.failed("reserve", err)
		return Reservation{}, false, nil
	}
	now := m.cfg.Now()
	hour := HourOf(now)
	r := Reservation{tenant: tenant, user: user, hour: hour, n: n}
	l := m.cfg.Quotas.For(id.Tenant)
	if l.Off() {
		if err := m.cfg.Backend.Add(ctx, tenant, user, hour, Counts{Tasks: n}); err != nil {
			m.failed("reserve", err)
			return Reservation{}, false, nil
		}
		return r, true, nil
	}
	ok, per, err := m.cfg.Backend.Reserve(ctx, tenant, user, hour, l.hours(), l.Tasks, n)
	if err != nil {
		m.failed("reserve", err)
		return Reservation{}, false, nil
	}
	var used int64
	for _, v := range per {
		used += v
	}
	if !ok {
		metrics.refusals.Inc()
		m.threshold(ctx, id, tenant, l, 100, used, now)
		return Reservation{}, false, QuotaExceeded(l, retryAfter(now, hour, l, per, n))
	}
	r.id, r.quota, r.used = id, l, used+n
	return r, true, nil
}

// reached sends the threshold events a reservation whose call succeeded
// reached (each once per period: a later call past a threshold already
// announced sends nothing). A reservation that fails never announces: the
// tasks it held are given back.
func (m *Meter) reached(ctx context.Context, r Reservation) {
	if r.quota.Off() {
		return
	}
	for _, pct := range []int64{80, 100} {
		if r.used*100 >= pct*r.quota.Tasks {
			m.threshold(context.WithoutCancel(ctx), r.id, r.tenant, r.quota, int(pct), r.used, m.cfg.Now())
		}
	}
}

// Release gives a reservation's tasks back.
func (m *Meter) Release(ctx context.Context, r Reservation) {
	if r.n == 0 {
		return
	}
	if err := m.cfg.Backend.Add(context.WithoutCancel(ctx), r.tenant, r.user, r.hour, Counts{Tasks: -r.n}); err != nil {
		m.failed("release", err)
	}
}

// settle adds d to the reservation's bucket (the outcome of its call).
func (m *Meter) settle(ctx context.Context, r Reservation, d Counts) {
	if err := m.cfg.Backend.Add(context.WithoutCancel(ctx), r.tenant, r.user, r.hour, d); err != nil {
		m.failed("count", err)
	}
}

// ThresholdEvent is a tenant reaching a share of its quota.
type ThresholdEvent struct {
	Tenant  string
	Percent int
	Tasks   int64
	Quota   Limit
	At      time.Time
	// ID is the event's webhook-id, the same on every gateway.
	ID string
}

// Body is the event as the partner's receiver gets it.
func (e ThresholdEvent) Body() map[string]any {
	return map[string]any{"type": "usage.threshold", "tenant": e.Tenant, "percent": e.Percent, "tasks": e.Tasks,
		"quota": e.Quota.Tasks, "period": PeriodString(e.Quota.Period), "at": e.At.UTC().Format(time.RFC3339)}
}

// PeriodString writes a period in hours ("720h").
func PeriodString(d time.Duration) string {
	if d%time.Hour == 0 {
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	}
	return d.String()
}

// threshold tells of a tenant reaching pct of l, once per quota period
// (the period the window's epoch names) on every gateway.
func (m *Meter) threshold(ctx context.Context, id gateway.Identity, tenant string, l Limit, pct int, tasks int64, now time.Time) {
	if m.cfg.OnThreshold == nil {
		return
	}
	epoch := now.Unix() / int64(l.Period/time.Second)
	key := "thr:" + tenant + ":" + l.String() + ":" + strconv.Itoa(pct) + ":" + strconv.FormatInt(epoch, 10)
	first, err := m.cfg.Backend.Once(ctx, key, l.Period)
	if err != nil {
		m.failed("threshold", err)
		return
	}
	if !first {
		return
	}
	metrics.thresholds.WithLabelValues(strconv.Itoa(pct)).Inc()
	sum := sha256.Sum256([]byte(key))
	m.cfg.OnThreshold(ThresholdEvent{Tenant: id.Tenant, Percent: pct, Tasks: tasks, Quota: l, At: now.UTC(),
		ID: "evt_usage_" + hex.EncodeToString(sum[:16])})
}

// tickets are the reservations a request made, carried in its context
// from the hook that reserved them to the one that settles them.
type tickets struct {
	mu   sync.Mutex
	list []Reservation
	run  *gateway.Identity // whose run, for ReserveRun
}

type ticketsKey struct{}

// WithTickets gives ctx a place for the reservations of the request.
func WithTickets(ctx context.Context) context.Context {
	if _, ok := ctx.Value(ticketsKey{}).(*tickets); ok {
		return ctx
	}
	return context.WithValue(ctx, ticketsKey{}, &tickets{})
}

func ticketsOf(ctx context.Context) *tickets {
	t, _ := ctx.Value(ticketsKey{}).(*tickets)
	return t
}

func (t *tickets) push(r Reservation) {
	t.mu.Lock()
	t.list = append(t.list, r)
	t.mu.Unlock()
}

// pop takes up to n reservations, oldest first.
func (t *tickets) pop(n int) []Reservation {
	t.mu.Lock()
	defer t.mu.Unlock()
	n = min(n, len(t.list))
	out := append([]Reservation(nil), t.list[:n]...)
	t.list = t.list[n:]
	return out
}

// StartRun begins an action run for id: the returned context carries the
// run's reservation from ReserveRun to end, which settles it by the run's
// outcome (actions.Outcome: success, error, pending, failed,
// connection_missing).
func (m *Meter) StartRun(ctx context.Context, id gateway.Identity) (context.Context, func(outcome string)) {
	t := &tickets{run: &id}
	ctx = context.WithValue(ctx, ticketsKey{}, t)
	return ctx, func(outcome string) {
		reserved := t.pop(1 << 30)
		switch outcome {
		case "success":
			metrics.runs.WithLabelValues("success").Inc()
			metrics.tasks.Add(float64(m.cfg.RunTasks))
			for _, r := range reserved {
				m.settle(ctx, r, Counts{ActionRuns: Outcomes{Success: 1}})
				m.reached(ctx, r)
			}
		case "error":
			metrics.runs.WithLabelValues("error").Inc()
			for _, r := range reserved {
				m.settle(ctx, r, Counts{Tasks: -r.n, ActionRuns: Outcomes{Error: 1}})
			}
		case "pending":
			// Still running at Zapier: the task stays counted.
			metrics.tasks.Add(float64(m.cfg.RunTasks))
			for _, r := range reserved {
				m.reached(ctx, r)
			}
		default:
			for _, r := range reserved {
				m.Release(ctx, r)
			}
		}
	}
}

// ReserveRun reserves a run's tasks before its first call to Zapier; ctx
// is StartRun's (without it, nothing is reserved). A refusal is 429
// quota_exceeded.
func (m *Meter) ReserveRun(ctx context.Context) error {
	t := ticketsOf(ctx)
	if t == nil || t.run == nil {
		return nil
	}
	id := *t.run
	r, ok, err := m.Reserve(ctx, id, m.cfg.RunTasks)
	if err != nil {
		return err
	}
	if !ok {
		if m.cfg.RunTasks == 0 {
			// A free run still counts by outcome.
			r = Reservation{hour: HourOf(m.cfg.Now())}
			if r.tenant, r.user, err = m.names(context.WithoutCancel(ctx), id); err != nil {
				return nil
			}
		} else {
			return nil
		}
	}
	t.push(r)
	return nil
}

// ReserveMCP reserves one tool call's tasks before it is sent (the tool
// call cap's hook, when a quota is configured). ctx is the request's: with
// tickets (WithTickets) the reservation travels there to ObserveMCP;
// without, it waits for the identity's next observed call.
func (m *Meter) ReserveMCP(ctx context.Context, id gateway.Identity) error {
	r, ok, err := m.Reserve(ctx, id, m.cfg.MCPTasks)
	if err != nil || !ok {
		return err
	}
	if t := ticketsOf(ctx); t != nil {
		t.push(r)
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pending == nil {
		m.pending = map[gateway.Identity][]Reservation{}
	}
	if len(m.pending[id]) < 1024 {
		m.pending[id] = append(m.pending[id], r)
	}
	return nil
}

func (m *Meter) popPending(id gateway.Identity, n int) []Reservation {
	m.mu.Lock()
	defer m.mu.Unlock()
	list := m.pending[id]
	n = min(n, len(list))
	out := list[:n:n]
	if rest := list[n:]; len(rest) > 0 {
		m.pending[id] = rest
	} else {
		delete(m.pending, id)
	}
	return out
}

// MCPResult is how a request carrying tool calls ended, for usage.
type MCPResult int

const (
	// MCPSuccess: the server answered 2xx without a tool error.
	MCPSuccess MCPResult = iota
	// MCPFailed: the call was sent and failed (a tool error, another
	// status, an unreachable server).
	MCPFailed
	// MCPNotCalled: refused or abandoned before it was sent (policy, caps,
	// the quota, authorization, the caller went away).
	MCPNotCalled
)

// ObserveMCP settles a request's tools tool calls by how it ended:
// success counts MCPTasks each (already reserved when a quota is set),
// anything else gives the reservations back. sent says whether the
// calls passed the gateway's own checks (the reservation hook ran).
func (m *Meter) ObserveMCP(ctx context.Context, id gateway.Identity, tools int, res MCPResult, sent bool) {
	if tools <= 0 {
		return
	}
	var reserved []Reservation
	if t := ticketsOf(ctx); t != nil {
		reserved = t.pop(tools)
	} else if sent && m.cfg.Quotas.Any() {
		reserved = m.popPending(id, tools)
	}
	switch res {
	case MCPSuccess:
		metrics.mcpCalls.WithLabelValues("success").Add(float64(tools))
		metrics.tasks.Add(float64(int64(tools) * m.cfg.MCPTasks))
		for _, r := range reserved {
			m.settle(ctx, r, Counts{MCPCalls: Outcomes{Success: 1}})
			m.reached(ctx, r)
		}
		if rest := tools - len(reserved); rest > 0 {
			m.Count(ctx, id, Counts{Tasks: int64(rest) * m.cfg.MCPTasks, MCPCalls: Outcomes{Success: int64(rest)}})
		}
	case MCPFailed:
		metrics.mcpCalls.WithLabelValues("error").Add(float64(tools))
		for _, r := range reserved {
			m.settle(ctx, r, Counts{Tasks: -r.n, MCPCalls: Outcomes{Error: 1}})
		}
		if rest := tools - len(reserved); rest > 0 {
			m.Count(ctx, id, Counts{MCPCalls: Outcomes{Error: int64(rest)}})
		}
	default:
		for _, r := range reserved {
			m.Release(ctx, r)
		}
	}
}

// TriggerDelivered counts one trigger event delivered to the partner.
func (m *Meter) TriggerDelivered(ctx context.Context, id gateway.Identity) {
	metrics.triggerEvents.Inc()
	m.Count(ctx, id, Counts{TriggerEvents: 1})
}

// APICalls counts units calls to Zapier's API spent for tenant.
func (m *Meter) APICalls(ctx context.Context, tenant string, units int) {
	if units <= 0 {
		return
	}
	metrics.apiCalls.Add(float64(units))
	m.Count(ctx, gateway.Identity{Tenant: tenant}, Counts{APICalls: int64(units)})
}

// StoreName names the usage counters in offboarding reports.
func (m *Meter) StoreName() string { return "usage" }

// Forget deletes the per-user counters of the scope (one user, or every
// user of the tenant). The tenant's totals stay: they are what the partner
// bills from, and name nobody.
func (m *Meter) Forget(ctx context.Context, sc gateway.Scope) (gateway.StoreReport, error) {
	tenant, err := m.cfg.Names.TenantName(ctx, sc.Tenant)
	if err != nil {
		return gateway.StoreReport{}, err
	}
	user := ""
	if sc.User != "" {
		if user, err = m.cfg.Names.Name(ctx, gateway.Identity{Tenant: sc.Tenant, User: sc.User}); err != nil {
			return gateway.StoreReport{}, err
		}
	}
	n, err := m.cfg.Backend.ForgetUsers(ctx, tenant, user)
	return gateway.StoreReport{Deleted: n}, err
}

var _ gateway.UserStore = (*Meter)(nil)
