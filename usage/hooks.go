package usage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/zapgate/caddy-zapier/actions"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/mcpgateway"
)

// The capabilities' hooks: how runs and tool calls reserve their tasks
// before any call to Zapier and settle them by their outcome.

// MeterActions makes zapier_actions' runs count and hold to the quota: a
// run reserves its task where it prepays the budget (before any call to
// Zapier) and settles it by its outcome.
func (m *Meter) MeterActions(cfg *actions.HandlerConfig) {
	if cfg.Budget != nil {
		cfg.Budget = meteredBudget{Budget: cfg.Budget, m: m}
	}
	trace := cfg.TraceRun
	cfg.TraceRun = func(ctx context.Context, id gateway.Identity) (context.Context, func(string, error)) {
		ctx, end := m.StartRun(ctx, id)
		finish := func(string, error) {}
		if trace != nil {
			ctx, finish = trace(ctx, id)
		}
		return ctx, func(outcome string, err error) {
			end(outcome)
			finish(outcome, err)
		}
	}
}

// meteredBudget reserves a run's task before the budget is spent.
type meteredBudget struct {
	actions.Budget
	m *Meter
}

func (b meteredBudget) Prepay(ctx context.Context, tenant string, units int) (context.Context, error) {
	if err := b.m.ReserveRun(ctx); err != nil {
		return ctx, err
	}
	return b.Budget.Prepay(ctx, tenant, units)
}

// MeterMCP makes zapier_mcp's tool calls count and, with a quota, reserve
// their tasks before they are sent (the tool-call cap's hook). Requests
// must carry WithTickets' context.
func (m *Meter) MeterMCP(cfg *mcpgateway.HandlerConfig) {
	if m.Config().Quotas.Any() {
		if cfg.Limit == nil {
			cfg.Limit = &mcpgateway.CallLimiter{}
		}
		cfg.Limit.Quota = func(ctx context.Context, id mcpgateway.Identity) error {
			return m.ReserveMCP(ctx, gateway.Identity{Tenant: id.Tenant, User: id.User})
		}
	}
	observe := cfg.Observe
	cfg.Observe = func(ctx context.Context, id mcpgateway.Identity, c mcpgateway.Call) {
		if observe != nil {
			observe(ctx, id, c)
		}
		res, sent := mcpResult(c)
		m.ObserveMCP(ctx, gateway.Identity{Tenant: id.Tenant, User: id.User}, c.Tools, res, sent)
	}
}

// mcpResult is how a proxied request's tool calls count: sent is false
// when the gateway refused them before the quota was asked.
func mcpResult(c mcpgateway.Call) (MCPResult, bool) {
	var ge *gateway.Error
	if errors.As(c.Err, &ge) && ge.Code == "quota_exceeded" {
		return MCPNotCalled, false
	}
	switch mcpgateway.Outcome(c) {
	case mcpgateway.OutcomeSuccess:
		return MCPSuccess, true
	case mcpgateway.OutcomeToolError, mcpgateway.OutcomeUpstreamError:
		return MCPFailed, true
	case mcpgateway.OutcomeFailed:
		if c.Status != 0 || errors.Is(c.Err, mcpgateway.ErrUpstream) {
			return MCPFailed, true
		}
	case mcpgateway.OutcomeDenied, mcpgateway.OutcomeLimited, mcpgateway.OutcomeUnchecked:
		return MCPNotCalled, false
	}
	return MCPNotCalled, true
}

// ParseQuotas reads the quota option: every tenant's "<tasks>/<period>"
// (empty: none) and named tenants' own.
func ParseQuotas(tasks string, tenants map[string]string, parseDuration func(string) (time.Duration, error)) (Quotas, error) {
	var out Quotas
	var err error
	if tasks != "" {
		if out.Default, err = ParseLimit(tasks, parseDuration); err != nil {
			return out, fmt.Errorf("quota tasks: %w", err)
		}
	}
	for t, s := range tenants {
		if !gateway.ValidIdentity(t) {
			return out, fmt.Errorf("quota tenant %q is not a valid tenant id", t)
		}
		l, err := ParseLimit(s, parseDuration)
		if err != nil {
			return out, fmt.Errorf("quota tenant %q: %w", t, err)
		}
		if out.Tenants == nil {
			out.Tenants = map[string]Limit{}
		}
		out.Tenants[t] = l
	}
	return out, nil
}

// The backends outlive config reloads: one memory backend per Zapier
// client, one Redis client per connection setting, for the process.
var (
	backendsMu sync.Mutex
	memories   = map[string]*Memory{}
	clients    = map[string]*redis.Client{}
)

// SharedMemory is the memory backend of a Zapier client.
func SharedMemory(clientID string) *Memory {
	backendsMu.Lock()
	defer backendsMu.Unlock()
	mem := memories[clientID]
	if mem == nil {
		mem = new(Memory)
		memories[clientID] = mem
	}
	return mem
}

// SharedClient is the Redis client of key (a connection setting, which
// must not reveal a password), dialled once.
func SharedClient(key string, dial func() (*redis.Client, error)) (*redis.Client, error) {
	backendsMu.Lock()
	defer backendsMu.Unlock()
	if c := clients[key]; c != nil {
		return c, nil
	}
	c, err := dial()
	if err != nil {
		return nil, err
	}
	clients[key] = c
	return c, nil
}
