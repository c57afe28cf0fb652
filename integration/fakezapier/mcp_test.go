package fakezapier

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"testing"
)

// mcpAuthorize mints an MCP connect token for app and runs the authorize
// step; it returns the redirect's query.
func (e *env) mcpAuthorize(app, redirectURI string, extra url.Values) (int, url.Values) {
	e.t.Helper()
	f := jwtForm(e.mint(e.key("ES256"), "org", "alice"), "connection:write mcp:run")
	f.Set("requested_token_type", DefaultConnectTokenType)
	f.Set("resource", e.srv.URL+"/mcp/"+app)
	res := e.postToken(f, false)
	if res.status != http.StatusOK {
		e.t.Fatalf("MCP connect token: %d %s", res.status, res.raw)
	}
	q := url.Values{"app": {app}, "token": {res.str("access_token")}, "redirect_uri": {redirectURI}, "state": {"st"},
		"response_type": {"code"}, "resource": {e.srv.URL + "/mcp/" + app}}
	for k, v := range extra {
		q[k] = v
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(e.srv.URL + "/oauth/authorize?" + q.Encode())
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if loc == nil {
		return resp.StatusCode, nil
	}
	return resp.StatusCode, loc.Query()
}

func TestMCPAuthorizeCodeAndRefreshGrants(t *testing.T) {
	e := newEnv(t)
	e.fz.RegisterMCPApp("SlackCLIAPI", "Slack")
	const cb = "https://app.example/zapier/mcp/callback"
	e.fz.SetMCPRedirectURIs(cb)

	// Public app list with links, no Authorization.
	list := e.api(http.MethodGet, "/v2/whitelabel/apps", "", "")
	data, _ := list.body["data"].([]any)
	if list.status != 200 || len(data) != 1 {
		t.Fatalf("apps: %d %s", list.status, list.raw)
	}
	links := data[0].(map[string]any)["links"].(map[string]any)
	if links["mcp_server_url"] != e.srv.URL+"/mcp/SlackCLIAPI" || links["mcp_authorize_url"] == "" {
		t.Fatalf("links %v", links)
	}

	// An unregistered redirect_uri is never redirected to.
	if status, _ := e.mcpAuthorize("SlackCLIAPI", "https://evil.example/cb", nil); status != http.StatusBadRequest {
		t.Fatalf("unregistered redirect_uri: %d", status)
	}

	// PKCE: the verifier must match the challenge.
	verifier := "a-verifier-that-is-long-enough-0123456789abcdef"
	sum := sha256.Sum256([]byte(verifier))
	status, q := e.mcpAuthorize("SlackCLIAPI", cb, url.Values{"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}})
	if status != http.StatusFound || q.Get("code") == "" || q.Get("state") != "st" {
		t.Fatalf("authorize: %d %v", status, q)
	}
	grant := func(f url.Values) tokenResult { return e.postToken(f, false) }
	code := url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")}, "redirect_uri": {cb}, "code_verifier": {"wrong"}}
	if res := grant(code); res.status != 400 || res.str("error") != "invalid_grant" {
		t.Fatalf("wrong verifier: %d %s", res.status, res.raw)
	}
	// The code is spent even by a refused attempt.
	code.Set("code_verifier", verifier)
	if res := grant(code); res.status != 400 {
		t.Fatalf("reused code: %d %s", res.status, res.raw)
	}

	// Without PKCE; redirect_uri must match; single use.
	_, q = e.mcpAuthorize("SlackCLIAPI", cb, nil)
	code = url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")}, "redirect_uri": {cb + "x"}}
	if res := grant(code); res.status != 400 {
		t.Fatalf("other redirect_uri: %d", res.status)
	}
	_, q = e.mcpAuthorize("SlackCLIAPI", cb, nil)
	code = url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")}, "redirect_uri": {cb}}
	res := grant(code)
	if res.status != 200 || res.str("access_token") == "" || res.str("refresh_token") == "" || res.str("scope") != "mcp:run" {
		t.Fatalf("code exchange: %d %s", res.status, res.raw)
	}
	if again := grant(code); again.status != 400 {
		t.Fatalf("code reused: %d", again.status)
	}

	// Refresh rotates: the old refresh token is spent.
	refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {res.str("refresh_token")}}
	r2 := grant(refresh)
	if r2.status != 200 || r2.str("refresh_token") == res.str("refresh_token") {
		t.Fatalf("refresh: %d %s", r2.status, r2.raw)
	}
	if r3 := grant(refresh); r3.status != 400 {
		t.Fatalf("spent refresh token: %d", r3.status)
	}
	// The MCP server checks the bearer.
	if r := e.api(http.MethodPost, "/mcp/SlackCLIAPI", "fzmat_unknown", `{}`); r.status != http.StatusUnauthorized {
		t.Fatalf("unknown MCP token: %d", r.status)
	}
	if st := e.fz.MCPStats(); st.CodeExchanges != 1 || st.Refreshes != 1 || st.Authorizations != 3 {
		t.Fatalf("stats %+v", st)
	}
}
