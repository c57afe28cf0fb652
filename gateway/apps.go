package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/zapgate/caddy-zapier/zapierapi"
)

// MaxAppID bounds an app identifier.
const MaxAppID = 128

// App is Zapier's two names for one app: Connect URLs use its key
// (SlackCLIAPI), the API its UUID.
type App struct {
	Key  string `json:"key"`
	UUID string `json:"uuid"`
}

// AppMap is a handler's configured apps (`app <key> <uuid>` lines), found by
// either name before Zapier's catalog is asked.
type AppMap struct {
	byKey  map[string]string // key → UUID (lower case)
	byUUID map[string]string // UUID (lower case) → key
}

// NewAppMap checks and indexes configured apps (key → UUID).
func NewAppMap(apps map[string]string) (AppMap, error) {
	m := AppMap{byKey: map[string]string{}, byUUID: map[string]string{}}
	for key, uuid := range apps {
		if !ValidAppName(key) || IsUUID(key) {
			return AppMap{}, fmt.Errorf("app %q: not a Connect implementation id (letters, digits and _-.@:, at most %d)", key, MaxAppID)
		}
		if !IsUUID(uuid) {
			return AppMap{}, fmt.Errorf("app %s: %q is not an app UUID", key, uuid)
		}
		uuid = strings.ToLower(uuid)
		if other, dup := m.byUUID[uuid]; dup {
			return AppMap{}, fmt.Errorf("apps %s and %s map to the same UUID %s", other, key, uuid)
		}
		m.byKey[key] = uuid
		m.byUUID[uuid] = key
	}
	return m, nil
}

// Resolve finds an app the configuration names, by key or by UUID (ok), or
// refuses a malformed name; any other app is for Zapier's catalog.
func (m AppMap) Resolve(name string) (app App, ok bool, aerr *Error) {
	if !ValidAppName(name) {
		return App{}, false, BadRequest(fmt.Sprintf("app must be 1-%d letters, digits or _-.@: (the app's key, e.g. SlackCLIAPI, or its UUID)", MaxAppID))
	}
	key, _, _ := strings.Cut(name, "@") // SlackCLIAPI@1.0.0 names SlackCLIAPI
	if uuid, ok := m.byKey[key]; ok {
		return App{Key: key, UUID: uuid}, true, nil
	}
	if IsUUID(name) {
		if key, ok := m.byUUID[strings.ToLower(name)]; ok {
			return App{Key: key, UUID: strings.ToLower(name)}, true, nil
		}
	}
	return App{}, false, nil
}

// ValidAppName accepts an app key (optionally versioned) or UUID.
func ValidAppName(app string) bool {
	if app == "" || len(app) > MaxAppID || strings.Trim(app, ".") == "" {
		return false // "." and ".." would be path segments in a Connect URL
	}
	for i := 0; i < len(app); i++ {
		c := app[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("_-.@:", c) >= 0) {
			return false
		}
	}
	return true
}

// IsUUID accepts the 8-4-4-4-12 hex form of an app UUID.
func IsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// AppResolver is the one way an app a request names is resolved, by key or
// UUID: the handler's configured overrides first, then Zapier's catalog
// (GET /v2/apps with the caller's token, cached in Dir). An unknown key is
// 404 app_not_found.
type AppResolver struct {
	Dir    *AppDirectory
	Caller *Caller
}

// Resolve resolves name for id.
func (r *AppResolver) Resolve(ctx context.Context, id Identity, overrides AppMap, name string) (App, error) {
	app, ok, aerr := overrides.Resolve(name)
	if aerr != nil {
		return App{}, aerr
	}
	if ok {
		return app, nil
	}
	key, uuid, err := r.Dir.Resolve(ctx, name, func(ctx context.Context, ids ...string) ([]zapierapi.App, error) {
		var apps []zapierapi.App
		err := r.Caller.Call(ctx, id, func(ctx context.Context, access string) (err error) {
			apps, err = r.Caller.Client.ListApps(ctx, r.Caller.APIURL, access, ids...)
			return err
		})
		return apps, err
	})
	if errors.Is(err, ErrAppNotFound) {
		return App{}, &Error{Status: http.StatusNotFound, Code: "app_not_found",
			Message: fmt.Sprintf("Zapier's app catalog (GET /v2/apps) has no app %q: name it by its key (e.g. SlackCLIAPI) or its UUID", name)}
	}
	if _, isZapier := zapierapi.AsError(err); isZapier {
		return App{}, CallError(err)
	}
	if err != nil {
		return App{}, err
	}
	return App{Key: key, UUID: uuid}, nil
}
