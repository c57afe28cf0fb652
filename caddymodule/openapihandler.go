package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/openapi"
)

func init() {
	caddy.RegisterModule(OpenAPI{})
	httpcaddyfile.RegisterHandlerDirective("zapier_openapi", parseHandler[OpenAPI])
	httpcaddyfile.RegisterDirectiveOrder("zapier_openapi", httpcaddyfile.Before, "respond")
}

// OpenAPI is the zapier_openapi responder: it serves the OpenAPI 3.1
// document of the gateway's own routes (package openapi), as JSON when the
// request path ends in .json and as YAML otherwise. It needs no identity:
// the document describes routes, not anyone's data.
type OpenAPI struct {
	// ServerURL replaces the document's servers, so clients generated from
	// it reach this gateway. Placeholders ({env.*}) are resolved at load.
	ServerURL string `json:"server_url,omitempty"`

	yaml, json         []byte
	yamlETag, jsonETag string
}

// CaddyModule returns the Caddy module information.
func (OpenAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.zapier_openapi",
		New: func() caddy.Module { return new(OpenAPI) },
	}
}

// Provision renders the document once.
func (h *OpenAPI) Provision(caddy.Context) error {
	serverURL := caddy.NewReplacer().ReplaceKnown(h.ServerURL, "")
	r, err := openapi.Render(serverURL)
	if err != nil {
		return fmt.Errorf("zapier_openapi: %w", err)
	}
	h.yaml, h.json = r.YAML, r.JSON
	h.yamlETag, h.jsonETag = contentETag(h.yaml), contentETag(h.json)
	return nil
}

func contentETag(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	zapier_openapi [<matcher>] {
//		server_url <url>
//	}
func (h *OpenAPI) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "server_url":
			if !d.AllArgs(&h.ServerURL) {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized zapier_openapi option %q", d.Val())
		}
	}
	return nil
}

func (h *OpenAPI) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if !gateway.AllowMethod(w, r, http.MethodGet, http.MethodHead) {
		return nil
	}
	body, etag, contentType := h.yaml, h.yamlETag, "application/yaml"
	if strings.HasSuffix(r.URL.Path, ".json") {
		body, etag, contentType = h.json, h.jsonETag, "application/json"
	}
	hdr := w.Header()
	hdr.Set("Content-Type", contentType)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*OpenAPI)(nil)
	_ caddyhttp.MiddlewareHandler = (*OpenAPI)(nil)
	_ caddyfile.Unmarshaler       = (*OpenAPI)(nil)
)
