package caddymodule

import (
	"cmp"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/redis/go-redis/v9"

	"github.com/zapgate/caddy-zapier/mcpgateway"
	"github.com/zapgate/caddy-zapier/sharedtokens"
)

// tokenCache sets the MCP token cache of cfg: token_cache_ttl, and with
// the zapier app's cache.redis a pub/sub channel on which the gateways
// sharing it drop a record one of them refreshed or forgot. It returns
// the channel's Redis client (closed in Cleanup), or nil.
func (h *MCP) tokenCache(app *App, cfg *mcpgateway.HandlerConfig) (*redis.Client, error) {
	cfg.TokenCacheTTL = time.Duration(h.TokenCacheTTL)
	r := app.Cache.Redis
	if cfg.TokenCacheTTL < 0 || r == nil {
		return nil, nil
	}
	client, err := sharedtokens.NewClient(caddy.NewReplacer().ReplaceKnown(r.URL, ""), time.Duration(r.Timeout))
	if err != nil {
		return nil, fmt.Errorf("zapier_mcp: token cache: %w", err)
	}
	channel := cmp.Or(r.Prefix, sharedtokens.DefaultPrefix) + hashHex(app.ClientID)[:16] + ":mcp_token_invalidations"
	cfg.Invalidations = mcpgateway.NewRedisInvalidations(client, channel)
	return client, nil
}

// tokenCacheTTL parses token_cache_ttl <duration>|off (off: -1).
func tokenCacheTTL(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	args := d.RemainingArgs()
	if len(args) != 1 {
		return d.ArgErr()
	}
	if args[0] == "off" {
		*dst = -1
		return nil
	}
	dur, err := caddy.ParseDuration(args[0])
	if err != nil || dur <= 0 {
		return d.Errf("token_cache_ttl must be a positive duration or off")
	}
	*dst = caddy.Duration(dur)
	return nil
}
