package fakezapier

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func TestCallbackURLValidation(t *testing.T) {
	e := newEnv(t)
	t.Cleanup(e.fz.Close)
	e.fz.cb.lookup = func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "public.example":
			return []netip.Addr{netip.MustParseAddr("93.184.215.14"), netip.MustParseAddr("2606:2800:21f:cb07:6820:80da:af6b:8b2c")}, nil
		case "mixed.example":
			return []netip.Addr{netip.MustParseAddr("93.184.215.14"), netip.MustParseAddr("10.0.0.7")}, nil
		case "localhost":
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
		return nil, errors.New("no such host")
	}
	tok, conn := e.callbackSetup()
	id := e.actionID(tok, testApp, "send")
	with := func(cb string) string {
		return fmt.Sprintf(`{"data":{"action":%q,"authentication":%q,"inputs":{},"callback_url":%s}}`, id, conn, cb)
	}
	long := "https://public.example/"
	long += strings.Repeat("a", 2048-len(long))

	for name, body := range map[string]string{
		"http":                 with(`"http://public.example/cb"`),
		"no scheme":            with(`"public.example/cb"`),
		"ftp":                  with(`"ftp://public.example/cb"`),
		"no host":              with(`"https:///cb"`),
		"2049 characters":      with(`"` + long + `a"`),
		"null":                 with(`null`),
		"number":               with(`42`),
		"blank":                with(`""`),
		"unresolvable":         with(`"https://nx.example/cb"`),
		"resolves to private":  with(`"https://mixed.example/cb"`),
		"localhost":            with(`"https://localhost/cb"`),
		"loopback":             with(`"https://127.0.0.1:8443/cb"`),
		"loopback 127/8":       with(`"https://127.9.9.9/cb"`),
		"10/8":                 with(`"https://10.1.2.3/cb"`),
		"172.16/12":            with(`"https://172.31.255.1/cb"`),
		"192.168/16":           with(`"https://192.168.0.10/cb"`),
		"link-local":           with(`"https://169.254.169.254/latest/meta-data"`),
		"CGNAT":                with(`"https://100.64.0.1/cb"`),
		"unspecified":          with(`"https://0.0.0.0/cb"`),
		"multicast":            with(`"https://224.0.0.251/cb"`),
		"broadcast":            with(`"https://255.255.255.255/cb"`),
		"documentation":        with(`"https://203.0.113.5/cb"`),
		"::1":                  with(`"https://[::1]/cb"`),
		"IPv6 unspecified":     with(`"https://[::]/cb"`),
		"ULA":                  with(`"https://[fd12:3456::1]/cb"`),
		"IPv6 link-local":      with(`"https://[fe80::1]/cb"`),
		"IPv6 multicast":       with(`"https://[ff02::1]/cb"`),
		"IPv4-mapped loopback": with(`"https://[::ffff:127.0.0.1]/cb"`),
		"NAT64 of private":     with(`"https://[64:ff9b::a00:1]/cb"`),
		"top level with data":  fmt.Sprintf(`{"data":{"action":%q,"authentication":%q,"inputs":{}},"callback_url":"https://public.example/cb"}`, id, conn),
		"flat, private":        fmt.Sprintf(`{"action":%q,"authentication":%q,"input":{},"callback_url":"https://10.0.0.1/cb"}`, id, conn),
	} {
		r := e.api(http.MethodPost, "/v2/action-runs", tok, body)
		if r.status != http.StatusBadRequest || apiErrorCode(t, r) != "invalid" || !strings.Contains(r.raw, `"parameter":"callback_url"`) {
			t.Errorf("%s: HTTP %d %s", name, r.status, r.raw)
		}
	}
	if st := e.fz.ActionStats(); st.RunsCreated != 0 {
		t.Fatalf("runs created by refused requests: %+v", st)
	}

	// Accepted: exactly 2048 characters, public literals and names, both
	// placements. The refusals above left the action id unused.
	for i, cb := range []string{long, "https://93.184.215.14:8443/cb?x=1", "https://[2606:4700:4700::1111]/cb",
		"https://[64:ff9b::5db8:d70e]/cb", "HTTPS://public.example/cb"} {
		if i > 0 {
			id = e.actionID(tok, testApp, "send")
		}
		if r := e.api(http.MethodPost, "/v2/action-runs", tok, with(fmt.Sprintf("%q", cb))); r.status != http.StatusOK {
			t.Errorf("%.60s: HTTP %d %s", cb, r.status, r.raw)
		}
	}
	flat := fmt.Sprintf(`{"action":%q,"authentication":%q,"input":{},"callback_url":"https://public.example/cb"}`, e.actionID(tok, testApp, "send"), conn)
	if r := e.api(http.MethodPost, "/v2/action-runs/", tok, flat); r.status != http.StatusOK {
		t.Errorf("flat body: HTTP %d %s", r.status, r.raw)
	}
	if d := e.fz.CallbackDeliveries(); len(d) != 6 || d[5].URL != "https://public.example/cb" || d[0].Attempts != 0 || d[0].Done {
		t.Errorf("deliveries %+v", d)
	}

	// CallbackAllowHosts exempts a host from the address rule, not from https.
	a := newEnv(t, func(c *Config) { c.CallbackAllowHosts = []string{"127.0.0.1", "LocalHost", "[::1]"} })
	t.Cleanup(a.fz.Close)
	tok, conn = a.callbackSetup()
	for cb, want := range map[string]int{
		"https://127.0.0.1:9/cb": http.StatusOK,
		"https://localhost/cb":   http.StatusOK,
		"https://[::1]:9/cb":     http.StatusOK,
		"http://127.0.0.1:9/cb":  http.StatusBadRequest,
		"https://127.0.0.2/cb":   http.StatusBadRequest,
	} {
		body := fmt.Sprintf(`{"data":{"action":%q,"authentication":%q,"inputs":{},"callback_url":%q}}`, a.actionID(tok, testApp, "send"), conn, cb)
		if r := a.api(http.MethodPost, "/v2/action-runs", tok, body); r.status != want {
			t.Errorf("allow-listed env, %s: HTTP %d %s", cb, r.status, r.raw)
		}
	}
}
