// Package zapierapi is the gateway's Zapier client: the OAuth token exchange
// at zapier.com/oauth/token (partner JWT → user access token, access token →
// connect token) and a small JSON helper for the few api.zapier.com calls the
// gateway makes itself.
//
// It is plain Go (no Caddy imports). Errors are *Error values classified by
// Kind so the adapter can map them to its HTTP answers, and they never carry
// the client secret, a JWT, a token or a request body.
package zapierapi

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults used by New for zero Config fields.
const (
	DefaultTokenURL         = "https://zapier.com/oauth/token"
	DefaultGrantType        = "urn:ietf:params:oauth:grant-type:token-exchange"
	DefaultSubjectTokenType = "urn:ietf:params:oauth:token-type:external-jwt"
	DefaultAccessTokenType  = "urn:ietf:params:oauth:token-type:access-token"
	DefaultConnectTokenType = "urn:ietf:params:oauth:token-type:connect-token"
	DefaultTimeout          = 10 * time.Second
	DefaultTTL              = 10 * time.Minute
	DefaultMaxAttempts      = 3
	DefaultUserAgent        = "caddy-zapier"

	ClientAuthPost  = "post"
	ClientAuthBasic = "basic"
)

// DefaultScopes are the access-token scopes for embedded actions
// (zapier-api.md §1.5); DefaultConnectScopes those for connect tokens.
var (
	DefaultScopes        = []string{"external", "connection:read", "connection:write", "zap", "zap:write", "action:run"}
	DefaultConnectScopes = []string{"connection:write"}
)

// Tuning of retries and reads; not configurable because nobody needs to.
const (
	backoffBase   = 100 * time.Millisecond
	backoffCap    = 2 * time.Second
	maxBodyBytes  = 1 << 20  // a success body larger than this is malformed
	maxErrorBytes = 64 << 10 // how much of an error body is parsed
	maxTTL        = 365 * 24 * time.Hour
)

// Config configures a Client. Zero values take the defaults above.
type Config struct {
	TokenURL         string        // default DefaultTokenURL
	ClientID         string        // required
	ClientSecret     string        // required; never in an error string, never logged
	GrantType        string        // default DefaultGrantType
	SubjectTokenType string        // default DefaultSubjectTokenType
	AccessTokenType  string        // default DefaultAccessTokenType
	ConnectTokenType string        // default DefaultConnectTokenType
	Scopes           []string      // access-token scopes; default DefaultScopes
	ConnectScopes    []string      // default DefaultConnectScopes
	ClientAuth       string        // "post" (form fields, default) | "basic" (RFC 6749 §2.3.1)
	Timeout          time.Duration // per attempt; default 10s
	DefaultTTL       time.Duration // used when a response has no expires_in; default 10m
	MaxAttempts      int           // default 3; only transient failures are retried
	// HTTPClient sends the requests; default a client with a tuned transport.
	// New uses a shallow copy that never follows redirects, so credentials
	// are never re-sent to another location.
	HTTPClient *http.Client
	Now        func() time.Time // default time.Now
	UserAgent  string           // default DefaultUserAgent
}

// String redacts the client secret, so logging a Config cannot leak it.
func (c Config) String() string {
	return fmt.Sprintf("zapierapi.Config{TokenURL:%q ClientID:%q ClientSecret:[redacted] ClientAuth:%q Scopes:%q ConnectScopes:%q Timeout:%s MaxAttempts:%d}",
		c.TokenURL, c.ClientID, c.ClientAuth, c.Scopes, c.ConnectScopes, c.Timeout, c.MaxAttempts)
}

// GoString redacts like String (for %#v).
func (c Config) GoString() string { return c.String() }

// Client talks to Zapier. It is safe for concurrent use.
type Client struct {
	cfg         Config
	hc          *http.Client
	scope       string // Scopes, space-joined
	connScope   string // ConnectScopes, space-joined
	basicAuth   string // precomputed "Basic …" header when ClientAuth is basic
	backoffBase time.Duration
	backoffCap  time.Duration
}

// String identifies the client without its credentials.
func (c *Client) String() string {
	return fmt.Sprintf("zapierapi.Client{TokenURL:%q ClientID:%q}", c.cfg.TokenURL, c.cfg.ClientID)
}

// GoString redacts like String (for %#v).
func (c *Client) GoString() string { return c.String() }

// New validates cfg, fills in defaults and returns a Client.
func New(cfg Config) (*Client, error) {
	if cfg.TokenURL == "" {
		cfg.TokenURL = DefaultTokenURL
	}
	if err := CheckURL(cfg.TokenURL); err != nil {
		return nil, fmt.Errorf("zapierapi: token_url: %w", err)
	}
	if cfg.ClientID == "" {
		return nil, errors.New("zapierapi: client_id is required")
	}
	if cfg.ClientSecret == "" {
		return nil, errors.New("zapierapi: client_secret is required")
	}
	if hasCtl(cfg.ClientID) || hasCtl(cfg.ClientSecret) {
		return nil, errors.New("zapierapi: client_id and client_secret must not contain control characters")
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&cfg.GrantType, DefaultGrantType)
	def(&cfg.SubjectTokenType, DefaultSubjectTokenType)
	def(&cfg.AccessTokenType, DefaultAccessTokenType)
	def(&cfg.ConnectTokenType, DefaultConnectTokenType)
	def(&cfg.ClientAuth, ClientAuthPost)
	def(&cfg.UserAgent, DefaultUserAgent)
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = DefaultScopes
	}
	if len(cfg.ConnectScopes) == 0 {
		cfg.ConnectScopes = DefaultConnectScopes
	}
	// Copy the slices so later changes by the caller do not race with us.
	cfg.Scopes = append([]string(nil), cfg.Scopes...)
	cfg.ConnectScopes = append([]string(nil), cfg.ConnectScopes...)
	for _, s := range append(append([]string(nil), cfg.Scopes...), cfg.ConnectScopes...) {
		if !validScope(s) {
			return nil, fmt.Errorf("zapierapi: invalid scope %q", s)
		}
	}
	switch cfg.ClientAuth {
	case ClientAuthPost, ClientAuthBasic:
	default:
		return nil, fmt.Errorf("zapierapi: client_auth must be %q or %q, not %q", ClientAuthPost, ClientAuthBasic, cfg.ClientAuth)
	}
	switch {
	case cfg.Timeout < 0:
		return nil, errors.New("zapierapi: timeout must not be negative")
	case cfg.Timeout == 0:
		cfg.Timeout = DefaultTimeout
	}
	switch {
	case cfg.DefaultTTL < 0 || cfg.DefaultTTL > maxTTL:
		return nil, errors.New("zapierapi: default_ttl must be between 0 and 1 year")
	case cfg.DefaultTTL == 0:
		cfg.DefaultTTL = DefaultTTL
	}
	switch {
	case cfg.MaxAttempts < 0:
		return nil, errors.New("zapierapi: max_attempts must not be negative")
	case cfg.MaxAttempts == 0:
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = defaultHTTPClient()
	}
	hc := *cfg.HTTPClient
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	c := &Client{
		cfg:         cfg,
		hc:          &hc,
		scope:       strings.Join(cfg.Scopes, " "),
		connScope:   strings.Join(cfg.ConnectScopes, " "),
		backoffBase: backoffBase,
		backoffCap:  backoffCap,
	}
	if cfg.ClientAuth == ClientAuthBasic {
		// RFC 6749 §2.3.1: form-urlencode id and secret before Basic encoding.
		r := http.Request{Header: http.Header{}}
		r.SetBasicAuth(url.QueryEscape(cfg.ClientID), url.QueryEscape(cfg.ClientSecret))
		c.basicAuth = r.Header.Get("Authorization")
	}
	return c, nil
}

// NewTransport returns the transport for calls to Zapier: connections kept
// alive across many concurrent exchanges (the stock transport keeps only 2
// idle connections per host) and bounded dial and TLS handshake times.
func NewTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 64
	t.IdleConnTimeout = 90 * time.Second
	t.TLSHandshakeTimeout = 10 * time.Second
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	return t
}

func defaultHTTPClient() *http.Client {
	return &http.Client{Transport: NewTransport()}
}

// CheckURL accepts absolute http(s) URLs with a host and without userinfo
// (credentials in a URL would end up in net/http error strings).
func CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("must be an absolute http or https URL")
	}
	if u.Host == "" {
		return errors.New("must have a host")
	}
	if u.User != nil {
		return errors.New("must not contain userinfo")
	}
	return nil
}

// validScope follows RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
func validScope(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b < 0x21 || b > 0x7e || b == '"' || b == '\\' {
			return false
		}
	}
	return true
}

func hasCtl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}
