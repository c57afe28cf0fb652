package caddymodule

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"strconv"
)

// connectScript is the browser helper served at connect.js.
//
//go:embed connect.js
var connectScript []byte

var connectScriptETag = func() string {
	sum := sha256.Sum256(connectScript)
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}()

// serveConnectScript serves connect.js. It carries no user data, so it may be
// cached; the ETag changes with the gateway's version of the script.
func serveConnectScript(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/javascript; charset=utf-8")
	h.Set("Cache-Control", "public, max-age=300")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("ETag", connectScriptETag)
	if etagMatches(r.Header.Get("If-None-Match"), connectScriptETag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(connectScript)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(connectScript)
	}
}
