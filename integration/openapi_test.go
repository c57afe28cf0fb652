package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/zapgate/caddy-zapier/openapi"
)

// The contract: every request the tests make to one of the gateway's
// routes, and the response to it, is validated against openapi/openapi.yaml
// (the document the gateway serves) with kin-openapi's openapi3filter, so
// the document cannot drift from the code.
//
//   - A request the document describes must get a response the document
//     describes for that operation: a documented status, its required
//     headers, and a body matching its schema.
//   - A request the document does not accept (a missing identity header, a
//     malformed body, an unknown route or method, as the tests send on
//     purpose) must be refused: a status of 400 or more that is documented
//     for the operation, or, for an unknown route or method, 404/405 with
//     the gateway's error envelope. An undocumented request that succeeds
//     fails the test: that is a route or an input the document is missing.
//
// Not validated, by this explicit list (everything else on a gateway's or
// an admin endpoint's port is):
//   - any host other than the gateways' and admin endpoints' ports below:
//     the fake Zapier, the partner's test servers;
//   - /zapier/api/… on a gateway: Zapier's own API, passed through;
//   - paths outside /zapier/ and /.well-known/ on a gateway: routes a test's
//     own config adds (`respond /reload-marker 204`);
//   - paths outside /zapier/ on an admin endpoint: Caddy's own admin API
//     (/load, /config/, /metrics, /debug/…);
//   - the bodies of text/event-stream responses (MCP streams), which are
//     opaque in the document and never end in some tests; their status and
//     headers are still validated;
//   - requests made by the headless browser (through the partner's proxy).
//
// What the fake Zapier POSTs to the gateway (run callbacks, connection
// webhooks, inbox notifications) goes through Config.CallbackHTTPClient,
// which startGateway makes validating.
var contract = mustLoadContract()

// validating wraps next (nil: http.DefaultTransport, looked up per request)
// so that its gateway traffic is checked against the contract.
func validating(next http.RoundTripper) http.RoundTripper {
	if _, ok := next.(contractTransport); ok {
		return next
	}
	return contractTransport{next: next}
}

// validatingClient is c with a validating transport.
func validatingClient(c *http.Client) *http.Client {
	if _, ok := c.Transport.(contractTransport); ok {
		return c
	}
	v := *c
	v.Transport = validating(c.Transport)
	return &v
}

type listener int

const (
	notGateway listener = iota
	gatewayListener
	adminListener
)

// maxSidecars bounds the sidecar ports (sidecars_test.go) recognised.
const maxSidecars = 8

// listenerOf tells which of the tests' Caddy listeners u is for.
func listenerOf(u *url.URL) listener {
	switch u.Hostname() {
	case "127.0.0.1", "localhost", "::1":
	default:
		return notGateway
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return notGateway
	}
	switch {
	case port == gatewayPort, port == httpsPort, port == binaryGatewayPort:
		return gatewayListener
	case port == adminPort, port == binaryAdminPort:
		return adminListener
	case port >= sidecarPort(0) && port < sidecarPort(maxSidecars):
		if (port-sidecarPort(0))%2 == 0 {
			return gatewayListener
		}
		return adminListener
	}
	return notGateway
}

// inContract tells whether a request to path on l is validated (see the
// list above).
func inContract(l listener, path string) bool {
	switch l {
	case gatewayListener:
		return (strings.HasPrefix(path, "/zapier/") || strings.HasPrefix(path, "/.well-known/")) &&
			!strings.HasPrefix(path, "/zapier/api/")
	case adminListener:
		return strings.HasPrefix(path, "/zapier/")
	}
	return false
}

type contractTransport struct{ next http.RoundTripper }

func (ct contractTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	next := ct.next
	if next == nil {
		next = http.DefaultTransport
	}
	l := listenerOf(req.URL)
	if !inContract(l, req.URL.Path) {
		return next.RoundTrip(req)
	}
	var reqBody []byte
	if req.Body != nil && req.Body != http.NoBody {
		var err error
		if reqBody, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		_ = req.Body.Close()
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(reqBody)), nil }
	}
	resp, err := next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	var respBody []byte
	streaming := isEventStream(resp.Header)
	if !streaming {
		respBody, err = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(respBody))
		if err != nil {
			return resp, nil // the caller sees the short body; nothing to validate
		}
	}
	if verr := contract.check(l, req, reqBody, resp, respBody, streaming); verr != nil {
		contract.record(verr)
		if resp.Body != nil {
			_ = resp.Body.Close()
		}
		return nil, verr
	}
	return resp, nil
}

func isEventStream(h http.Header) bool {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return mt == "text/event-stream"
}

type apiContract struct {
	doc    *openapi3.T
	router routers.Router

	mu       sync.Mutex
	failures []string
	checked  map[string]int // "METHOD path-template status" → count
}

func mustLoadContract() *apiContract {
	c, err := loadContract(openapi.YAML())
	if err != nil {
		panic("openapi/openapi.yaml: " + err.Error())
	}
	return c
}

func loadContract(data []byte) (*apiContract, error) {
	doc, err := openapi3.NewLoader().LoadFromData(data)
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, err
	}
	if !doc.IsOpenAPI31OrLater() {
		return nil, fmt.Errorf("openapi %s, want 3.1", doc.OpenAPI)
	}
	// Route by path alone: the tests' ports are not the document's
	// servers. Which listener a route belongs to is checked by its tag.
	doc.Servers = nil
	for _, item := range doc.Paths.Map() {
		item.Servers = nil
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	return &apiContract{doc: doc, router: router, checked: map[string]int{}}, nil
}

func init() {
	// Bodies the gateway serves besides JSON; their schemas are strings.
	for _, ct := range []string{"text/javascript", "application/yaml", "text/event-stream", "text/plain"} {
		openapi3filter.RegisterBodyDecoder(ct, openapi3filter.PlainBodyDecoder)
	}
}

var validationOptions = func() *openapi3filter.Options {
	opts := &openapi3filter.Options{
		IncludeResponseStatus:             true, // an undocumented status fails
		RejectWhenRequestBodyNotSpecified: true,
		// The identity headers are security schemes too; the header
		// parameters already check them, and tests send requests without
		// them on purpose.
		AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
	}
	// One line per schema error (where and why), not the schema and value.
	opts.WithCustomSchemaErrorFunc(func(e *openapi3.SchemaError) string {
		return fmt.Sprintf("%s (at /%s)", e.Reason, strings.Join(e.JSONPointer(), "/"))
	})
	return opts
}()

// contractError names the route, the status and the validator's reason.
type contractError struct {
	method, path string
	status       int
	reason       string
}

func (e *contractError) Error() string {
	return fmt.Sprintf("openapi contract: %s %s → %d: %s", e.method, e.path, e.status, e.reason)
}

func (c *apiContract) check(l listener, req *http.Request, reqBody []byte, resp *http.Response, respBody []byte, streaming bool) error {
	fail := func(format string, args ...any) error {
		reason := fmt.Sprintf(format, args...)
		if len(respBody) > 0 {
			const most = 400
			reason += fmt.Sprintf("; body: %.*s", most, respBody)
		}
		return &contractError{method: req.Method, path: req.URL.Path, status: resp.StatusCode, reason: reason}
	}
	route, pathParams, err := c.router.FindRoute(req)
	if err != nil {
		// Not in the document: fine only when the gateway refused it.
		if !errors.Is(err, routers.ErrPathNotFound) && !errors.Is(err, routers.ErrMethodNotAllowed) {
			return fail("routing: %v", err)
		}
		if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
			return fail("the document does not describe this request (%v), yet it was answered %d", err, resp.StatusCode)
		}
		schema := "ErrorEnvelope"
		if l == adminListener {
			schema = "AdminError"
		}
		if verr := c.validateSchema(schema, respBody); verr != nil {
			return fail("an unknown route's %d is not an %s: %v", resp.StatusCode, schema, verr)
		}
		c.count(req.Method + " (not in the document) " + strconv.Itoa(resp.StatusCode))
		return nil
	}
	if isAdmin := slices.Contains(route.Operation.Tags, "admin"); isAdmin != (l == adminListener) {
		return fail("operation %s is tagged admin=%v but was reached on the %s listener", route.Operation.OperationID, isAdmin, map[listener]string{gatewayListener: "gateway", adminListener: "admin"}[l])
	}
	ctx := context.Background()
	valReq := req.Clone(ctx)
	valReq.Body = io.NopCloser(bytes.NewReader(reqBody))
	in := &openapi3filter.RequestValidationInput{Request: valReq, PathParams: pathParams, Route: route, Options: validationOptions}
	reqErr := openapi3filter.ValidateRequest(ctx, in)

	opts := *validationOptions
	opts.ExcludeResponseBody = streaming
	in.Options = &opts
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Body: io.NopCloser(bytes.NewReader(respBody)), Options: &opts}
	if respErr := openapi3filter.ValidateResponse(ctx, out); respErr != nil {
		return fail("response of %s: %v", route.Operation.OperationID, respErr)
	}
	if reqErr != nil && resp.StatusCode < 400 {
		return fail("the request does not match %s (%v), yet the gateway accepted it", route.Operation.OperationID, reqErr)
	}
	c.count(req.Method + " " + route.Path + " " + strconv.Itoa(resp.StatusCode))
	return nil
}

// validateSchema validates a JSON body against a component schema.
func (c *apiContract) validateSchema(name string, body []byte) error {
	ref := c.doc.Components.Schemas[name]
	if ref == nil {
		return fmt.Errorf("no schema %s", name)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return err
	}
	return ref.Value.VisitJSON(v, openapi3.EnableJSONSchema2020())
}

func (c *apiContract) record(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failures = append(c.failures, err.Error())
}

func (c *apiContract) count(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checked[key]++
}

// failuresSince returns the failures recorded after the first n.
func (c *apiContract) failuresSince(n int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.failures[n:])
}

func (c *apiContract) failureCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.failures)
}

var watchedTests sync.Map // *testing.T → true

// watchContract fails t, when it ends, with every contract failure its
// traffic caused (the failing request also got an error, but a test may
// have expected errors, or retried until a timeout).
func watchContract(t *testing.T) {
	t.Helper()
	if _, already := watchedTests.LoadOrStore(t, true); already {
		return // a test that starts a second gateway
	}
	from := contract.failureCount()
	t.Cleanup(func() {
		for _, f := range contract.failuresSince(from) {
			t.Error(f)
		}
	})
}

// TestMain fails the run for contract failures no watched test reported,
// and, with -v, lists how often each documented route and status was seen.
func TestMain(m *testing.M) {
	code := m.Run()
	if fs := contract.failuresSince(0); len(fs) > 0 {
		fmt.Fprintf(os.Stderr, "%d openapi contract failures in this run:\n  %s\n", len(fs), strings.Join(fs, "\n  "))
		code = 1
	}
	if testing.Verbose() {
		contract.mu.Lock()
		keys := make([]string, 0, len(contract.checked))
		for k := range contract.checked {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		fmt.Printf("openapi contract: %d route/status pairs validated\n", len(keys))
		seen := map[string]bool{}
		for _, k := range keys {
			fmt.Printf("  %-70s %d\n", k, contract.checked[k])
			method, rest, _ := strings.Cut(k, " ")
			path, _, _ := strings.Cut(rest, " ")
			seen[method+" "+path] = true
		}
		contract.mu.Unlock()
		var unexercised []string
		for path, item := range contract.doc.Paths.Map() {
			for method := range item.Operations() {
				if !seen[method+" "+path] {
					unexercised = append(unexercised, method+" "+path)
				}
			}
		}
		slices.Sort(unexercised)
		fmt.Printf("openapi contract: %d documented operations no test reached:\n  %s\n", len(unexercised), strings.Join(unexercised, "\n  "))
	}
	os.Exit(code)
}

// Ports of the built binary's gateway (binary_test.go) and its admin endpoint.
var (
	binaryGatewayPort = 9060 + portOffset
	binaryAdminPort   = 2990 + portOffset
)

// TestGatewayServesTheOpenAPIDocument fetches the document from a gateway
// that mounts zapier_openapi as Caddyfile.example does: the bytes are the
// repository's, both encodings load as OpenAPI 3.1, and the fetches
// themselves are validated against the document like all other traffic.
func TestGatewayServesTheOpenAPIDocument(t *testing.T) {
	g := startGateway(t, gatewayOptions{siteExtra: `
	handle /zapier/openapi.* {
		zapier_openapi {
			server_url http://gateway.itest:8080
		}
	}`})
	want, err := openapi.Render("http://gateway.itest:8080")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, contentType string }{
		{"/zapier/openapi.yaml", "application/yaml"},
		{"/zapier/openapi.json", "application/json"},
	} {
		status, hdr, body := g.do(request{path: tc.path})
		if status != http.StatusOK || hdr.Get("Content-Type") != tc.contentType {
			t.Fatalf("%s: %d %q", tc.path, status, hdr.Get("Content-Type"))
		}
		served, err := loadContract(body)
		if err != nil {
			t.Fatalf("%s does not load as OpenAPI 3.1: %v", tc.path, err)
		}
		if served.doc.Paths.Len() != contract.doc.Paths.Len() {
			t.Errorf("%s: %d paths, the repository's document %d", tc.path, served.doc.Paths.Len(), contract.doc.Paths.Len())
		}
		if wantBody := map[string][]byte{"application/yaml": want.YAML, "application/json": want.JSON}[tc.contentType]; !bytes.Equal(body, wantBody) {
			t.Errorf("%s is not the repository's document rendered for its server_url", tc.path)
		}
		if !bytes.Contains(body, []byte("http://gateway.itest:8080")) {
			t.Errorf("%s does not name server_url", tc.path)
		}
	}
	// Undocumented methods and routes are refused in the error envelope
	// (and the contract checks that shape).
	if status, _, _ := g.do(request{method: http.MethodPost, path: "/zapier/openapi.yaml"}); status != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", status)
	}
}

// TestContractRefusesUndocumentedSuccess checks the checker itself: a route
// the document does not describe fails when it answers 2xx, a documented
// route fails when its response contradicts the document, and a request
// outside the document passes when the gateway refuses it as documented.
func TestContractRefusesUndocumentedSuccess(t *testing.T) {
	reqTo := func(method, rawURL string) *http.Request {
		r, err := http.NewRequest(method, rawURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	respWith := func(status int, contentType, body string) (*http.Response, []byte) {
		h := http.Header{}
		if contentType != "" {
			h.Set("Content-Type", contentType)
		}
		return &http.Response{StatusCode: status, Header: h}, []byte(body)
	}
	errorBody := `{"error":{"code":"identity_missing","message":"no identity"}}`
	cases := []struct {
		name    string
		req     *http.Request
		status  int
		ct      string
		body    string
		wantErr string
	}{
		{"undocumented route answered 200", reqTo("GET", gatewayURL+"/zapier/connect/secret-new-route"), 200, "application/json", `{}`, "does not describe"},
		{"undocumented route refused", reqTo("GET", gatewayURL+"/zapier/connect/nope"), 404, "application/json", `{"error":{"code":"not_found","message":"no"}}`, ""},
		{"missing identity refused as documented", reqTo("GET", gatewayURL+"/zapier/connect/connections"), 401, "application/json", errorBody, ""},
		{"missing identity accepted", reqTo("GET", gatewayURL+"/zapier/connect/connections"), 200, "application/json", `{"data":[]}`, "yet the gateway accepted it"},
		{"undocumented status", reqTo("GET", gatewayURL+"/zapier/connect/connections"), 418, "application/json", errorBody, "status is not supported"},
		{"body contradicting the schema", reqTo("GET", gatewayURL+"/.well-known/jwks.json"), 200, "application/json", `{"keys":[{"kty":"EC"}]}`, "response of getJWKS"},
		{"unknown error code", reqTo("GET", gatewayURL+"/zapier/connect/connections"), 401, "application/json", `{"error":{"code":"made_up","message":"x"}}`, "response of listConnections"},
		{"admin route on the gateway", reqTo("GET", gatewayURL+"/zapier/status"), 200, "application/json", `{}`, "tagged admin"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := respWith(tc.status, tc.ct, tc.body)
			err := contract.check(listenerOf(tc.req.URL), tc.req, nil, resp, body, false)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("unexpected failure: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
