package caddymodule

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"

	"github.com/zapgate/caddy-zapier/metrics"
	"github.com/zapgate/caddy-zapier/sharedtokens"
)

// RedisConfig turns on the token tier shared by several gateways: access
// tokens live in Redis too, encrypted, and a cold identity is exchanged by
// one gateway while the others wait for its token. Off by default.
type RedisConfig struct {
	// redis://[user:password@]host:port/db, rediss://… (TLS) or
	// unix:///path. Placeholders such as {env.ZAPIER_REDIS_URL} are
	// resolved at provision time; it is never logged. Required.
	URL string `json:"url,omitempty"`
	// 32 random bytes in base64 (e.g. `openssl rand -base64 32`), the same
	// on every gateway: it encrypts tokens at rest (AES-256-GCM) and keys
	// the HMAC that names identities in Redis. Use {env.*} or {file.*}; it
	// is never logged. Required.
	Key string `json:"key,omitempty"`
	// Timeout of one Redis operation; past it the gateway goes on without
	// Redis. Default 250ms.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// Prefix of every Redis key. Default "zapier:".
	Prefix string `json:"prefix,omitempty"`
}

// redis returns the Redis settings, creating them for the Caddyfile parser.
func (c *CacheConfig) redis() *RedisConfig {
	if c.Redis == nil {
		c.Redis = new(RedisConfig)
	}
	return c.Redis
}

// sharedTokenFetches counts local-cache fetches through the Redis tier by
// how they were answered. One per process, like the other collectors.
var sharedTokenFetches = func() *prometheus.CounterVec {
	c := metrics.NewCounterVec("shared_token_fetches_total",
		"Token fetches through the shared Redis tier by outcome (shared, waited, exchanged, fallback_unavailable, fallback_timeout).", "outcome")
	for _, o := range sharedtokens.Outcomes {
		c.WithLabelValues(o.String())
	}
	return c
}()

// provisionSharedTokens builds the Redis tier when cache.redis is set. Like
// the rest of Provision it does no network I/O; the client connects on
// first use.
func (a *App) provisionSharedTokens(ctx caddy.Context) error {
	if err := metrics.Register(ctx.GetMetricsRegistry(), sharedTokenFetches); err != nil {
		return err
	}
	r := a.Cache.Redis
	if r == nil {
		return nil
	}
	repl := caddy.NewReplacer()
	url := repl.ReplaceKnown(r.URL, "")
	key, keyErr := decodeRedisKey(repl.ReplaceKnown(r.Key, ""))
	var errs []error
	if url == "" {
		errs = append(errs, errors.New("cache.redis url is required (empty after resolving placeholders)"))
	}
	if keyErr != nil {
		errs = append(errs, keyErr)
	}
	if r.Timeout < 0 {
		errs = append(errs, errors.New("cache.redis timeout must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("zapier: %w", err)
	}

	wait := sharedTokenWait(a)
	tier, err := sharedtokens.New(sharedtokens.Config{
		URL:       url,
		Key:       key,
		Namespace: a.sharedNamespace(),
		Prefix:    r.Prefix,
		Timeout:   time.Duration(r.Timeout),
		LeaseTTL:  wait,
		Wait:      wait,
		// A gateway refreshing ahead of expiry must get a newer token than
		// the one it replaces: only tokens that outlive its refresh window
		// (with room to spare) are taken from Redis.
		MinFresh:       time.Duration(a.Cache.RefreshAhead) + expiryMargin + 5*time.Second,
		OnAvailability: a.sharedTierAvailability,
		OnError: func(err error) {
			a.logger.Warn("shared token tier", zap.Error(err))
		},
	})
	if err != nil {
		return fmt.Errorf("zapier: cache.redis: %w", err)
	}
	a.shared = tier
	return nil
}

// sharedTokenWait is how long a cold gateway waits for another's exchange,
// and how long a lease lasts: one exchange attempt.
func sharedTokenWait(a *App) time.Duration { return time.Duration(a.Exchange.Timeout) }

func decodeRedisKey(text string) ([]byte, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, errors.New("cache.redis key is required (empty after resolving placeholders): 32 random bytes in base64")
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if key, err := enc.DecodeString(text); err == nil {
			if len(key) != sharedtokens.KeySize {
				return nil, fmt.Errorf("cache.redis key must decode to %d bytes, not %d (e.g. openssl rand -base64 32)", sharedtokens.KeySize, len(key))
			}
			return key, nil
		}
	}
	return nil, errors.New("cache.redis key is not base64 (e.g. openssl rand -base64 32)")
}

// sharedNamespace separates, in one Redis, the tokens of gateways with
// different Zapier credentials or token requests: gateways share tokens only
// when they would have obtained the same ones. The secret is left out so a
// secret rotation rolled out gateway by gateway keeps them sharing.
func (a *App) sharedNamespace() string {
	h := sha256.New()
	for _, part := range []string{
		a.TokenURL, a.ClientID, a.Issuer, a.Audience, a.UserClaim, a.TenantClaim, strings.Join(a.Scopes, " "),
		a.Exchange.GrantType, a.Exchange.SubjectTokenType, a.Exchange.AccessTokenType,
	} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (a *App) sharedTierAvailability(available bool, err error) {
	if available {
		a.logger.Info("shared token tier: Redis answers again; tokens are shared again")
		return
	}
	a.logger.Warn("shared token tier: Redis unavailable; each gateway uses its own cache and exchanges until it answers", zap.Error(err))
}

func (a *App) closeSharedTokens() {
	if a.shared != nil {
		_ = a.shared.Close()
	}
}
