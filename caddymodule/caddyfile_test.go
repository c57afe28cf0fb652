package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func TestUnmarshalGlobalOptionEveryField(t *testing.T) {
	d := caddyfile.NewTestDispenser(`zapier {
		client_id {env.ID}
		client_secret {file./run/secret}
		issuer https://accounts.example.com
		audience aud.example
		user_claim uid
		tenant_claim tid
		jwt_ttl 2m
		signing_alg RS384
		key_rotation 0
		key_overlap 1h
		scopes a b c
		token_url https://t.example/oauth/token
		api_url https://api.example
		connect_url https://connect.example
		callback_url https://app.example/cb
		return_origins https://app.example https://other.example
		exchange {
			grant_type g
			subject_token_type s
			access_token_type a
			connect_token_type c
			client_auth basic
			timeout 3s
			max_inflight 4
		}
		identity {
			user_header X-User
			tenant_header X-Tenant
			trusted_sources 10.0.0.0/8 ::1
		}
		cache {
			size 10
			refresh_ahead 30s
			default_ttl 1m
			negative_ttl 2s
		}
	}`)
	val, err := parseGlobalOption(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got App
	if err := json.Unmarshal(val.(httpcaddyfile.App).Value, &got); err != nil {
		t.Fatal(err)
	}
	zero := caddy.Duration(0)
	want := App{
		ClientID: "{env.ID}", ClientSecret: "{file./run/secret}", Issuer: "https://accounts.example.com",
		Audience: "aud.example", UserClaim: "uid", TenantClaim: "tid", JWTTTL: caddy.Duration(2 * time.Minute),
		SigningAlg: "RS384", KeyRotation: &zero, KeyOverlap: caddy.Duration(time.Hour), Scopes: []string{"a", "b", "c"},
		TokenURL: "https://t.example/oauth/token", APIURL: "https://api.example", ConnectURL: "https://connect.example",
		CallbackURL: "https://app.example/cb", ReturnOrigins: []string{"https://app.example", "https://other.example"},
		Exchange: &ExchangeConfig{GrantType: "g", SubjectTokenType: "s", AccessTokenType: "a", ConnectTokenType: "c",
			ClientAuth: "basic", Timeout: caddy.Duration(3 * time.Second), MaxInflight: 4},
		Identity: &IdentityConfig{UserHeader: "X-User", TenantHeader: "X-Tenant", TrustedSources: []string{"10.0.0.0/8", "::1"}},
		Cache: &CacheConfig{Size: 10, RefreshAhead: caddy.Duration(30 * time.Second), DefaultTTL: caddy.Duration(time.Minute),
			NegativeTTL: caddy.Duration(2 * time.Second)},
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("parsed\n%s\nwant\n%s", gotJSON, wantJSON)
	}
}

func TestUnmarshalGlobalOptionMinimalStaysMinimal(t *testing.T) {
	d := caddyfile.NewTestDispenser(`zapier {
		client_id id
		client_secret secret
		issuer https://iss
	}`)
	val, err := parseGlobalOption(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := string(val.(httpcaddyfile.App).Value)
	want := `{"client_id":"id","client_secret":"secret","issuer":"https://iss"}`
	if got != want {
		t.Errorf("adapted = %s, want %s (defaults belong in Provision)", got, want)
	}
}

func TestUnmarshalGlobalOptionErrors(t *testing.T) {
	for _, tc := range []struct{ input, want string }{
		{"zapier {\n bogus 1\n}", `unrecognized zapier option "bogus"`},
		{"zapier {\n client_id\n}", "client_id takes exactly one value"},
		{"zapier {\n client_id a b\n}", "client_id takes exactly one value"},
		{"zapier {\n jwt_ttl soon\n}", "jwt_ttl: invalid duration"},
		{"zapier {\n scopes\n}", "scopes takes one or more values"},
		{"zapier {\n exchange {\n max_inflight many\n }\n}", `max_inflight: invalid number "many"`},
		{"zapier {\n exchange {\n bogus x\n }\n}", `unrecognized zapier exchange option "bogus"`},
		{"zapier {\n identity {\n bogus x\n }\n}", `unrecognized zapier identity option "bogus"`},
		{"zapier {\n cache {\n bogus x\n }\n}", `unrecognized zapier cache option "bogus"`},
		{`zapier extra`, "wrong argument count"},
	} {
		_, err := parseGlobalOption(caddyfile.NewTestDispenser(tc.input), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", tc.input, err, tc.want)
		}
	}
	if _, err := parseGlobalOption(caddyfile.NewTestDispenser(`zapier {}`), httpcaddyfile.App{}); err == nil {
		t.Error("a second zapier block was accepted")
	}
}

func TestUnmarshalHandlers(t *testing.T) {
	var j JWKS
	if err := j.UnmarshalCaddyfile(caddyfile.NewTestDispenser("zapier_jwks {\n max_age 1m\n}")); err != nil {
		t.Fatal(err)
	}
	if j.MaxAge != caddy.Duration(time.Minute) {
		t.Errorf("max_age = %v", j.MaxAge)
	}
	if err := new(JWKS).UnmarshalCaddyfile(caddyfile.NewTestDispenser("zapier_jwks {\n nope\n}")); err == nil {
		t.Error("unknown zapier_jwks option accepted")
	}
	if err := new(Auth).UnmarshalCaddyfile(caddyfile.NewTestDispenser("zapier_auth")); err != nil {
		t.Error(err)
	}
	if err := new(Auth).UnmarshalCaddyfile(caddyfile.NewTestDispenser("zapier_auth {\n x\n}")); err == nil {
		t.Error("zapier_auth accepted an option")
	}
}

func TestValidateConfigNamesTheOption(t *testing.T) {
	valid := func() *App {
		a := &App{ClientID: "id", ClientSecret: "s", Issuer: "https://iss"}
		a.setDefaults()
		a.clientSecret = a.ClientSecret
		return a
	}
	if err := valid().validateConfig(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*App)
		want   string
	}{
		{"client_id", func(a *App) { a.ClientID = "" }, "client_id is required"},
		{"client_secret", func(a *App) { a.clientSecret = "" }, "client_secret is required"},
		{"issuer", func(a *App) { a.Issuer = "" }, "issuer is required"},
		{"jwt_ttl", func(a *App) { a.JWTTTL = caddy.Duration(6 * time.Minute) }, "jwt_ttl 6m0s is out of range"},
		{"alg", func(a *App) { a.SigningAlg = "HS256" }, `signing_alg "HS256"`},
		{"token_url", func(a *App) { a.TokenURL = "zapier.com/oauth" }, "token_url"},
		{"api_url", func(a *App) { a.APIURL = "://bad" }, `api_url "://bad": not a valid URL`},
		{"return_origins", func(a *App) { a.ReturnOrigins = []string{"https://app.example/path"} }, "return_origins"},
		{"client_auth", func(a *App) { a.Exchange.ClientAuth = "jwt" }, "exchange.client_auth"},
		{"trusted empty", func(a *App) { a.Identity.TrustedSources = []string{} }, "identity.trusted_sources: at least one"},
		{"trusted bad", func(a *App) { a.Identity.TrustedSources = []string{"10.0.0.0/33"} }, `malformed CIDR "10.0.0.0/33"`},
		{"headers", func(a *App) { a.Identity.TenantHeader = "x-zapier-user" }, "two distinct header names"},
		{"overlap", func(a *App) { a.KeyOverlap = caddy.Duration(time.Minute) }, "key_overlap (1m0s) must be at least jwt_ttl (5m0s)"},
		{"rotation", func(a *App) { d := caddy.Duration(time.Hour); a.KeyRotation = &d }, "key_rotation (1h0m0s) must be longer than key_overlap"},
	} {
		a := valid()
		tc.mutate(a)
		err := a.validateConfig()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", tc.name, err, tc.want)
		}
	}
}

func TestSecretIsNeverInValidationErrors(t *testing.T) {
	a := &App{ClientID: "id", ClientSecret: "hunter2-secret", Issuer: "", SigningAlg: "nope"}
	a.setDefaults()
	a.clientSecret = a.ClientSecret
	a.TokenURL = "not a url"
	err := a.validateConfig()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error leaks the secret: %v", err)
	}
}
