package zapierapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// App is one app of GET /v2/apps (zapier-api-2026.md §5.2): its UUID id
// (for /v2/authentications and /v2/actions) and its versionless key (the
// implementation id of Connect URLs, e.g. SlackCLIAPI).
type App struct {
	ID    string
	Key   string
	Title string
}

// Paging of GET /v2/apps: Zapier's default page is 10 apps.
const (
	appsPageSize = 100
	maxAppsPages = 200
)

type appsPage struct {
	Links struct {
		Next json.RawMessage `json:"next"`
	} `json:"links"`
	Meta struct {
		Count *int `json:"count"`
	} `json:"meta"`
	Data []struct {
		ID    json.RawMessage `json:"id"`
		Key   json.RawMessage `json:"key"`
		Title json.RawMessage `json:"title"`
	} `json:"data"`
}

// ListApps lists GET /v2/apps, every page, with the user's access token:
// the whole catalog, or with ids only those apps (by UUID). Pages are
// requested by offset on apiURL, never by following links.next. Items
// without an id are skipped; an app without a key has Key "".
func (c *Client) ListApps(ctx context.Context, apiURL, accessToken string, ids ...string) ([]App, error) {
	base := strings.TrimRight(apiURL, "/") + "/v2/apps"
	var out []App
	offset := 0
	for page := 0; ; page++ {
		if page == maxAppsPages {
			return nil, &Error{Kind: KindFailed, Op: "list apps", Err: fmt.Errorf("more than %d pages", maxAppsPages)}
		}
		q := url.Values{"limit": {strconv.Itoa(appsPageSize)}, "offset": {strconv.Itoa(offset)}}
		if len(ids) > 0 {
			q.Set("ids", strings.Join(ids, ","))
		}
		var p appsPage
		if err := c.doJSON(ctx, "list apps", http.MethodGet, base+"?"+q.Encode(), accessToken, nil, &p); err != nil {
			return nil, err
		}
		for _, item := range p.Data {
			id, ok := jsonString(item.ID)
			if !ok || id == "" {
				continue
			}
			key, _ := jsonString(item.Key)
			title, _ := jsonString(item.Title)
			out = append(out, App{ID: id, Key: key, Title: title})
		}
		offset += len(p.Data)
		more := !isNull(p.Links.Next) || (p.Meta.Count != nil && offset < *p.Meta.Count)
		if !more || len(p.Data) == 0 {
			if out == nil {
				out = []App{}
			}
			return out, nil
		}
	}
}
