package caddymodule

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/zapgate/caddy-zapier/budget"
	"github.com/zapgate/caddy-zapier/metrics"
	"github.com/zapgate/caddy-zapier/sharedtokens"
)

// Zapier's documented Workflow API limits (zapier-api.md §4.8).
const (
	defaultBudgetPerIP   = "60/1m"
	defaultBudgetPartner = "150/1m"
	defaultBudgetMaxWait = 10 * time.Second
)

// APIBudgetConfig is the request budget in front of every call to Zapier's
// API: what zapier_auth proxies and every call the gateway makes itself.
type APIBudgetConfig struct {
	// Off restores the behaviour without a budget: calls go out at once
	// and only a 429 from Zapier stops them.
	Off bool `json:"off,omitempty"`
	// Requests per window from this sidecar, "<requests>/<duration>".
	// Default 60/1m, Zapier's documented per-IP limit.
	PerIP string `json:"per_ip,omitempty"`
	// Requests per window across every sidecar of the partner. Default
	// 150/1m, Zapier's documented partner limit. With cache.redis it is
	// drawn from one count in Redis.
	Partner string `json:"partner,omitempty"`
	// Longest a request waits for budget; past it, 503
	// zapier_budget_exhausted with Retry-After. Default 10s; 0 never waits.
	MaxWait *caddy.Duration `json:"max_wait,omitempty"`
	// Requests granted at once before the rest are paced, one per
	// window/requests: a saturated budget then serves every tenant's
	// arrivals in turn instead of in bursts. Default a quarter of per_ip's
	// requests; per_ip's requests turn pacing off.
	Burst int `json:"burst,omitempty"`
}

// budgetPool keeps budgets across reloads: a reload must not forget what
// was spent in the current window.
var budgetPool = caddy.NewUsagePool()

type pooledBudget struct {
	*budget.Budget
	redis *redis.Client // nil without cache.redis
}

func (p *pooledBudget) Destruct() error {
	p.Close()
	if p.redis != nil {
		return p.redis.Close()
	}
	return nil
}

func (a *App) setBudgetDefaults() {
	if a.APIBudget == nil {
		a.APIBudget = new(APIBudgetConfig)
	}
	setDefault(&a.APIBudget.PerIP, defaultBudgetPerIP)
	setDefault(&a.APIBudget.Partner, defaultBudgetPartner)
	if a.APIBudget.MaxWait == nil {
		d := caddy.Duration(defaultBudgetMaxWait)
		a.APIBudget.MaxWait = &d
	}
}

// provisionBudget builds (or, after a reload with the same settings, reuses)
// the request budget. It does no network I/O.
func (a *App) provisionBudget(ctx caddy.Context) error {
	if err := metrics.RegisterAPI(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	c := a.APIBudget
	if c.Off {
		return nil
	}
	perIP, err := budget.ParseLimit(c.PerIP, caddy.ParseDuration)
	if err != nil {
		return fmt.Errorf("zapier: api_budget per_ip: %w", err)
	}
	partner, err := budget.ParseLimit(c.Partner, caddy.ParseDuration)
	if err != nil {
		return fmt.Errorf("zapier: api_budget partner: %w", err)
	}
	if *c.MaxWait < 0 {
		return errors.New("zapier: api_budget max_wait must not be negative")
	}
	burst := c.Burst
	if burst == 0 {
		burst = max(1, perIP.Requests/4)
	}
	if burst < 0 {
		return errors.New("zapier: api_budget burst must be positive")
	}
	var redisURL, redisPrefix string
	var redisTimeout time.Duration
	if r := a.Cache.Redis; r != nil {
		redisURL = caddy.NewReplacer().ReplaceKnown(r.URL, "")
		redisPrefix, redisTimeout = r.Prefix, time.Duration(r.Timeout)
	}
	// The pool key holds the Redis URL only hashed (it may carry a password).
	a.budgetKey = strings.Join([]string{perIP.String(), partner.String(), time.Duration(*c.MaxWait).String(), strconv.Itoa(burst),
		hashHex(redisURL), redisPrefix, a.ClientID, a.APIURL}, "|")
	val, _, err := budgetPool.LoadOrNew(a.budgetKey, func() (caddy.Destructor, error) {
		cfg := budget.Config{PerIP: perIP, Partner: partner, MaxWait: time.Duration(*c.MaxWait), Burst: burst, Observer: metrics.BudgetObserver{}}
		p := new(pooledBudget)
		if redisURL != "" {
			client, err := sharedtokens.NewClient(redisURL, redisTimeout)
			if err != nil {
				return nil, fmt.Errorf("zapier: api_budget: %w", err)
			}
			p.redis = client
			// One partner limit per Zapier client: partners sharing a
			// Redis do not share a budget.
			cfg.Shared = budget.NewRedisShared(client, cmp.Or(redisPrefix, sharedtokens.DefaultPrefix)+hashHex(a.ClientID)[:16]+":")
			cfg.SharedTimeout = cmp.Or(redisTimeout, sharedtokens.DefaultTimeout)
		}
		b, err := budget.New(cfg)
		if err != nil {
			if p.redis != nil {
				_ = p.redis.Close()
			}
			return nil, fmt.Errorf("zapier: api_budget: %w", err)
		}
		p.Budget = b
		return p, nil
	})
	if err != nil {
		return err
	}
	a.budget = val.(*pooledBudget)
	a.gate.Budget = a.budget.Budget
	return metrics.ObserveBudget(ctx.GetMetricsRegistry(), a.budget.Budget)
}

// hashHex names a value in a key without revealing it.
func hashHex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func (a *App) cleanupBudget() error {
	if a.budgetKey == "" || a.budget == nil {
		return nil
	}
	_, err := budgetPool.Delete(a.budgetKey)
	return err
}

// rateLimited logs a 429 from Zapier's API (the gate has started the
// cooldown).
func (a *App) rateLimited(retryAfter time.Duration) {
	a.logger.Warn("Zapier answered 429: its API cooldown runs; calls wait or fail fast until it ends",
		zap.Duration("retry_after", retryAfter))
}

// parseAPIBudget reads the api_budget option:
//
//	api_budget off
//	api_budget {
//		per_ip   60/1m
//		partner  150/1m
//		max_wait 10s
//		burst    15
//	}
func (a *App) parseAPIBudget(d *caddyfile.Dispenser) error {
	if a.APIBudget == nil {
		a.APIBudget = new(APIBudgetConfig)
	}
	c := a.APIBudget
	if d.NextArg() {
		if d.Val() != "off" {
			return d.Errf("api_budget: unexpected %q (want off, or a block)", d.Val())
		}
		c.Off = true
		if d.NextArg() {
			return d.ArgErr()
		}
		return nil
	}
	c.Off = false
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if !d.NextArg() {
			return d.ArgErr()
		}
		val := d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
		switch opt {
		case "per_ip", "partner":
			if _, err := budget.ParseLimit(val, caddy.ParseDuration); err != nil {
				return d.Errf("api_budget %s: %v", opt, err)
			}
			if opt == "per_ip" {
				c.PerIP = val
			} else {
				c.Partner = val
			}
		case "burst":
			n, err := strconv.Atoi(val)
			if err != nil || n <= 0 {
				return d.Errf("api_budget burst: %q is not a positive integer", val)
			}
			c.Burst = n
		case "max_wait":
			dur, err := caddy.ParseDuration(val)
			if err != nil {
				return d.Errf("api_budget max_wait: %v", err)
			}
			wait := caddy.Duration(dur)
			c.MaxWait = &wait
		default:
			return d.Errf("api_budget: unknown option %q (per_ip, partner, max_wait, burst)", opt)
		}
	}
	return nil
}

// BudgetStatus is the request budget in GET /zapier/status.
type BudgetStatus struct {
	budget.Snapshot
	MaxWait string `json:"max_wait"`
	// Seconds until the budget has room for one more request; 0 now.
	RoomInSeconds float64 `json:"room_in_seconds"`
}

func (a *App) budgetStatus() *BudgetStatus {
	if a.budget == nil {
		return nil
	}
	s := a.budget.Snapshot()
	return &BudgetStatus{Snapshot: s, MaxWait: time.Duration(*a.APIBudget.MaxWait).String(), RoomInSeconds: s.BlockedFor.Seconds()}
}
