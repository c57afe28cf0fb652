package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// mcpIngress is the partner's web app and ingress for the MCP flow: a
// session cookie, and /zapier/mcp/* proxied to the gateway with the
// session's identity headers. It runs on http://localhost:<port>, another
// origin than the fake's authorize step (http://127.0.0.1:<port>).
func mcpIngress(t *testing.T) (origin string) {
	t.Helper()
	var mu sync.Mutex
	sessions := map[string][2]string{}
	gw, _ := url.Parse(gatewayURL)
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(gw)
		pr.Out.URL.Path, pr.Out.URL.RawPath = pr.In.URL.Path, ""
		pr.Out.Header.Del("X-Zapier-Tenant") // the browser never asserts an identity
		pr.Out.Header.Del("X-Zapier-User")
		if c, err := pr.In.Cookie("partner_session"); err == nil {
			mu.Lock()
			id, ok := sessions[c.Value]
			mu.Unlock()
			if ok {
				pr.Out.Header.Set("X-Zapier-Tenant", id[0])
				pr.Out.Header.Set("X-Zapier-User", id[1])
			}
		}
	}}
	mux := http.NewServeMux()
	mux.Handle("/zapier/mcp/", proxy)
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		sid := hex.EncodeToString(b)
		mu.Lock()
		sessions[sid] = [2]string{r.URL.Query().Get("tenant"), r.URL.Query().Get("user")}
		mu.Unlock()
		http.SetCookie(w, &http.Cookie{Name: "partner_session", Value: sid, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
		_, _ = w.Write([]byte("<!doctype html><title>logged in</title><p id=ok>logged in</p>"))
	})
	mux.HandleFunc("GET /done", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("<!doctype html><title>done</title><p id=done>done</p>"))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return "http://localhost:" + srv.URL[strings.LastIndex(srv.URL, ":")+1:]
}

// The MCP authorize flow in a real Chromium: the partner's page sends the
// browser to authorize, Zapier's step (the fake, another origin) approves
// and redirects to the callback through the partner's ingress, and the
// browser lands on return_to; the agent then calls the app's tools.
func TestMCPBrowserAuthorize(t *testing.T) {
	origin := mcpIngress(t)
	callback := origin + "/zapier/mcp/callback"
	g := startGateway(t, gatewayOptions{
		zapierExtra: "return_origins " + origin,
		siteExtra:   "handle_path /zapier/mcp/* {\n\t\tzapier_mcp {\n\t\t\tcallback_url " + callback + "\n\t\t\tpkce on\n\t\t}\n\t}",
	})
	g.fake.RegisterMCPApp(mcpSlack, "Slack")
	g.fake.SetMCPRedirectURIs(callback)

	ctx := newChromium(t)
	if _, err := chromedp.Run(ctx, chromedp.Navigate(origin+"/login?tenant=org_1&user=alice")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Navigate(origin+"/zapier/mcp/authorize?app="+mcpSlack+"&return_to="+url.QueryEscape(origin+"/done?from=partner"))); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.WaitReady(chromedp.CSS("#done"))); err != nil {
		t.Fatal(err)
	}
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(loc)
	if q := u.Query(); !strings.HasPrefix(loc, origin+"/done?from=partner&") || q.Get("zapier_mcp") != "success" || q.Get("zapier_app") != mcpSlack {
		t.Fatalf("the browser ended at %s", loc)
	}
	if st := g.fake.MCPStats(); st.CodeExchanges != 1 {
		t.Fatalf("fake stats %+v", st)
	}
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := g.mustMCPSession(cctx, "org_1", "alice", mcpSlack, nil)
	if who := callText(t, cctx, s, &mcp.CallToolParams{Name: "whoami"}); who != "org_1/alice "+mcpSlack {
		t.Fatalf("whoami = %q", who)
	}
}
