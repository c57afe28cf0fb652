// Package actionclaims holds the `billing` and `rate_limit` claims Zapier
// reads from the partner JWT on Actions API calls: their configuration (a
// default and per-tenant overrides), its checks, their encoding as extra
// JWT claims, and the token-cache keys that keep tokens minted with
// different claims apart.
//
// What Zapier documents (White Label API reference, "Execute a
// StoredAction"): `billing` must be a JSON string; the values given override
// Zapier's defaults (is_billable false, origin "actions_api", usage_type
// "action_run", description, exemption_reason and exemption_details null);
// with is_billable true a successful stored action run is charged to the
// user as one task. `rate_limit` is an object: `exempt` true lifts the
// stored-actions limit (200 requests per 5 minutes by default), and
// `limit_override` (1-1000) sets another. Zapier reads both from the JWT
// used to authenticate; that they travel in the partner JWT exchanged for
// the access token is assumed (see docs/actions.md).
//
// No Caddy import: the caddymodule glue decodes the configuration and hands
// it here.
package actionclaims

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/zapgate/caddy-zapier/gateway"
)

// Claim names, as Zapier reads them.
const (
	BillingClaim   = "billing"
	RateLimitClaim = "rate_limit"
)

// Zapier's documented bounds of rate_limit.limit_override (requests per 5
// minutes).
const (
	MinLimitOverride = 1
	MaxLimitOverride = 1000
)

// maxText bounds the free-text fields.
const maxText = 512

// Billing is the `billing` claim. Fields left unset are not sent, so Zapier
// applies its own default for them.
type Billing struct {
	// Bill a successful stored action run to the end user as one task.
	IsBillable *bool `json:"is_billable,omitempty"`
	// Zapier's default: actions_api.
	Origin string `json:"origin,omitempty"`
	// Zapier's default: action_run.
	UsageType   string `json:"usage_type,omitempty"`
	Description string `json:"description,omitempty"`
	// Why the usage is exempt from billing, and details.
	ExemptionReason  string `json:"exemption_reason,omitempty"`
	ExemptionDetails string `json:"exemption_details,omitempty"`
}

// RateLimit is the `rate_limit` claim.
type RateLimit struct {
	// Ask Zapier to lift its stored-actions rate limit. Zapier applies it
	// only where it has granted the partner the exemption.
	Exempt *bool `json:"exempt,omitempty"`
	// Another limit, 1-1000 requests per 5 minutes (Zapier's default 200).
	LimitOverride int `json:"limit_override,omitempty"`
}

// Claims are the two claims one tenant's Actions tokens carry.
type Claims struct {
	Billing   *Billing   `json:"billing,omitempty"`
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
}

// Config is the `claims` option: the claims of every tenant's Actions
// tokens, and per-tenant overrides. A tenant's `billing` (or `rate_limit`)
// replaces the default one whole; a claim the tenant does not name is the
// default's.
type Config struct {
	Billing   *Billing   `json:"billing,omitempty"`
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// Per-tenant overrides, by tenant id (the tenant identity value).
	Tenants map[string]*Claims `json:"tenants,omitempty"`
}

// Set is one compiled claim set: the JWT payload members to add and their
// digest. The zero Set is "no claims".
type Set struct {
	// Extra is JSON object members, each preceded by a comma, for
	// jwks.Manager.MintWith.
	Extra []byte
	// Digest names Extra in token-cache keys.
	Digest string
}

// None reports whether s adds no claims.
func (s Set) None() bool { return s.Digest == "" }

// Policy is a checked Config: which claim set each tenant's Actions tokens
// carry. A nil *Policy adds no claims to any token.
type Policy struct {
	def     Set
	tenants map[string]Set
}

var (
	identifier = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
	// registry maps every digest compiled in this process to its members,
	// so a token of an older configuration (a reload in flight) is still
	// minted with exactly the claims its key names.
	registry sync.Map // digest → []byte
)

// Compile checks c and builds its Policy; a nil or empty Config gives a nil
// Policy. userClaim and tenantClaim are the identity claim names, which the
// two claims must not collide with. Every message names the option.
func (c *Config) Compile(userClaim, tenantClaim string) (*Policy, error) {
	if c == nil || (c.Billing == nil && c.RateLimit == nil && len(c.Tenants) == 0) {
		return nil, nil
	}
	var errs []error
	for _, name := range []string{userClaim, tenantClaim} {
		if name == BillingClaim || name == RateLimitClaim {
			errs = append(errs, fmt.Errorf("claims: the identity claim %q collides with the %s claim; rename user_claim/tenant_claim", name, name))
		}
	}
	errs = append(errs, checkClaims("claims", Claims{Billing: c.Billing, RateLimit: c.RateLimit})...)
	p := &Policy{tenants: make(map[string]Set, len(c.Tenants))}
	p.def = encode(Claims{Billing: c.Billing, RateLimit: c.RateLimit})
	tenants := make([]string, 0, len(c.Tenants))
	for t := range c.Tenants {
		tenants = append(tenants, t)
	}
	sort.Strings(tenants)
	for _, t := range tenants {
		o := c.Tenants[t]
		where := fmt.Sprintf("claims.tenants[%q]", t)
		if !gateway.ValidIdentity(t) {
			errs = append(errs, fmt.Errorf("%s: a tenant id is 1-256 bytes of UTF-8 without control characters", where))
			continue
		}
		if o == nil || (o.Billing == nil && o.RateLimit == nil) {
			errs = append(errs, fmt.Errorf("%s: names neither billing nor rate_limit", where))
			continue
		}
		errs = append(errs, checkClaims(where, *o)...)
		merged := Claims{Billing: c.Billing, RateLimit: c.RateLimit}
		if o.Billing != nil {
			merged.Billing = o.Billing
		}
		if o.RateLimit != nil {
			merged.RateLimit = o.RateLimit
		}
		p.tenants[t] = encode(merged)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, s := range append([]Set{p.def}, mapValues(p.tenants)...) {
		if !s.None() {
			registry.Store(s.Digest, s.Extra)
		}
	}
	return p, nil
}

func mapValues(m map[string]Set) []Set {
	out := make([]Set, 0, len(m))
	for _, s := range m {
		out = append(out, s)
	}
	return out
}

func checkClaims(where string, c Claims) []error {
	var errs []error
	if b := c.Billing; b != nil {
		if *b == (Billing{}) {
			errs = append(errs, fmt.Errorf("%s.billing: set at least one field (is_billable, origin, usage_type, description, exemption_reason, exemption_details)", where))
		}
		for name, v := range map[string]string{"origin": b.Origin, "usage_type": b.UsageType} {
			if v != "" && !identifier.MatchString(v) {
				errs = append(errs, fmt.Errorf("%s.billing.%s %q: want a lower-case identifier such as %s", where, name, v, map[string]string{"origin": "actions_api", "usage_type": "action_run"}[name]))
			}
		}
		for name, v := range map[string]string{"description": b.Description, "exemption_reason": b.ExemptionReason, "exemption_details": b.ExemptionDetails} {
			if v != "" && !validText(v) {
				errs = append(errs, fmt.Errorf("%s.billing.%s: at most %d bytes of UTF-8 without control characters", where, name, maxText))
			}
		}
	}
	if r := c.RateLimit; r != nil {
		if r.Exempt == nil && r.LimitOverride == 0 {
			errs = append(errs, fmt.Errorf("%s.rate_limit: set exempt or limit_override", where))
		}
		if r.LimitOverride != 0 && (r.LimitOverride < MinLimitOverride || r.LimitOverride > MaxLimitOverride) {
			errs = append(errs, fmt.Errorf("%s.rate_limit.limit_override %d: Zapier accepts %d-%d requests per 5 minutes", where, r.LimitOverride, MinLimitOverride, MaxLimitOverride))
		}
		if r.Exempt != nil && *r.Exempt && r.LimitOverride != 0 {
			errs = append(errs, fmt.Errorf("%s.rate_limit: limit_override has no effect with exempt true; set one or the other", where))
		}
	}
	return errs
}

func validText(s string) bool {
	if len(s) > maxText || !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0) {
			return false
		}
	}
	return true
}

// encode renders c as JWT payload members: billing as a JSON string (as
// Zapier documents it), rate_limit as an object.
func encode(c Claims) Set {
	if c.Billing == nil && c.RateLimit == nil {
		return Set{}
	}
	var b []byte
	if c.Billing != nil {
		inner, _ := json.Marshal(c.Billing) // plain fields: cannot fail
		str, _ := json.Marshal(string(inner))
		b = append(b, `,"`+BillingClaim+`":`...)
		b = append(b, str...)
	}
	if c.RateLimit != nil {
		obj, _ := json.Marshal(c.RateLimit)
		b = append(b, `,"`+RateLimitClaim+`":`...)
		b = append(b, obj...)
	}
	sum := sha256.Sum256(b)
	return Set{Extra: b, Digest: hex.EncodeToString(sum[:16])}
}

// For is the claim set of tenant's Actions tokens: its override, else the
// default, else none.
func (p *Policy) For(tenant string) Set {
	if p == nil {
		return Set{}
	}
	if s, ok := p.tenants[tenant]; ok {
		return s
	}
	return p.def
}

// keySep joins an identity's user and a claim-set digest in a token-cache
// key. Identity values never hold a control character, so such a key cannot
// be a real identity's.
const keySep = "\x00claims:"

// Key is the token-cache key of id's tokens minted with the claim set
// named by digest. The tenant stays as it is, so evicting a whole tenant
// reaches them.
func Key(id gateway.Identity, digest string) gateway.Identity {
	return gateway.Identity{Tenant: id.Tenant, User: id.User + keySep + digest}
}

// Split undoes Key: the identity and the digest, and whether k is such a
// key at all.
func Split(k gateway.Identity) (id gateway.Identity, digest string, ok bool) {
	user, digest, ok := strings.Cut(k.User, keySep)
	if !ok {
		return k, "", false
	}
	return gateway.Identity{Tenant: k.Tenant, User: user}, digest, true
}

// KeyFor is the token-cache key of id's Actions tokens under p: id itself
// when the tenant's tokens carry no claims (the key is exactly what it
// would be without this package).
func (p *Policy) KeyFor(id gateway.Identity) gateway.Identity {
	if s := p.For(id.Tenant); !s.None() {
		return Key(id, s.Digest)
	}
	return id
}

// Mint resolves a token-cache key for minting: the identity to mint for and
// the extra claims to add (nil for a plain identity's key). A digest no
// configuration of this process compiled is an error.
func Mint(k gateway.Identity) (id gateway.Identity, extra []byte, err error) {
	id, digest, ok := Split(k)
	if !ok {
		return k, nil, nil
	}
	v, found := registry.Load(digest)
	if !found {
		return id, nil, fmt.Errorf("actionclaims: no claim set %q is configured", digest)
	}
	return id, v.([]byte), nil
}

// Tokens is the token source of Actions calls: the tenant's claim set picks
// the token (and so the cache entry and the exchange); a tenant without
// claims gets the plain token from Next.
type Tokens struct {
	Next   gateway.TokenSource
	Policy *Policy
}

// Token gives id's Actions token.
func (t Tokens) Token(ctx context.Context, id gateway.Identity) (string, error) {
	return t.Next.Token(ctx, t.Policy.KeyFor(id))
}

// Evict drops id's Actions token if it is still token.
func (t Tokens) Evict(id gateway.Identity, token string) {
	t.Next.Evict(t.Policy.KeyFor(id), token)
}

var _ gateway.TokenSource = Tokens{}
