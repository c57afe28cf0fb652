package zapierapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Paging of GET /v2/authentications. Zapier's default page is 10 items; a
// larger page keeps the common case to one request, and the page bound stops
// a misbehaving server from keeping the gateway busy forever.
const (
	authenticationsPageSize = 100
	maxAuthenticationsPages = 100
	// maxListedItems bounds what a listing keeps, whatever the pages hold
	// (a page may carry more than the limit asked for).
	maxListedItems = authenticationsPageSize * maxAuthenticationsPages
)

// Authentication is one of a user's app connections, as listed by
// GET /v2/authentications (zapier-api.md §4.2).
type Authentication struct {
	// ID is always a string: Zapier's API sends strings, while Connect's
	// postMessage carries numbers, so callers compare ids as strings.
	ID string
	// App is the app's UUID (Zapier may send an expanded app object; its
	// id is used then).
	App       string
	IsExpired bool
	Title     string
}

// authenticationsPage is decoded leniently: an unexpected type in a field we
// do not need must not fail the whole list.
type authenticationsPage struct {
	Links struct {
		Next json.RawMessage `json:"next"`
	} `json:"links"`
	Meta struct {
		Count *int `json:"count"`
	} `json:"meta"`
	Data []struct {
		ID        json.RawMessage `json:"id"`
		App       json.RawMessage `json:"app"`
		IsExpired *bool           `json:"is_expired"`
		Title     json.RawMessage `json:"title"`
	} `json:"data"`
}

// ListAuthentications lists every authentication the user owns for app (the
// app's UUID), following all pages. apiURL is Zapier's API base URL, e.g.
// https://api.zapier.com; accessToken is the user's own access token.
//
// Pages are requested by offset on apiURL rather than by following
// links.next, so the bearer token is never sent to a host named in a
// response. An item without is_expired is reported as expired: a connection
// is only usable when Zapier says so.
func (c *Client) ListAuthentications(ctx context.Context, apiURL, accessToken, app string) ([]Authentication, error) {
	if app == "" {
		return nil, fmt.Errorf("%w: list authentications: empty app", ErrInvalidInput)
	}
	base := strings.TrimRight(apiURL, "/") + "/v2/authentications"
	var out []Authentication
	offset := 0
	for page := 0; ; page++ {
		if page == maxAuthenticationsPages {
			return nil, &Error{Kind: KindFailed, Op: "list authentications",
				Err: fmt.Errorf("more than %d pages", maxAuthenticationsPages)}
		}
		q := url.Values{
			"app":    {app},
			"limit":  {strconv.Itoa(authenticationsPageSize)},
			"offset": {strconv.Itoa(offset)},
		}
		var p authenticationsPage
		if err := c.doJSON(ctx, "list authentications", http.MethodGet, base+"?"+q.Encode(), accessToken, nil, &p); err != nil {
			return nil, err
		}
		for _, item := range p.Data {
			id, ok := idString(item.ID)
			if !ok {
				return nil, &Error{Kind: KindFailed, Op: "list authentications",
					Err: errors.New("malformed response: an authentication without an id")}
			}
			title, _ := jsonString(item.Title)
			out = append(out, Authentication{
				ID:        id,
				App:       appID(item.App),
				IsExpired: item.IsExpired == nil || *item.IsExpired,
				Title:     title,
			})
		}
		if len(out) > maxListedItems {
			return nil, &Error{Kind: KindFailed, Op: "list authentications",
				Err: fmt.Errorf("more than %d authentications", maxListedItems)}
		}
		offset += len(p.Data)
		more := !isNull(p.Links.Next) || (p.Meta.Count != nil && offset < *p.Meta.Count)
		if !more || len(p.Data) == 0 {
			return out, nil
		}
	}
}

// idString reads an id sent as a JSON string or an integer number, and
// returns it as a string (123 and "123" are the same id).
func idString(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if s, ok := jsonString(raw); ok {
		return s, s != ""
	}
	if len(raw) == 0 || len(raw) > 64 {
		return "", false
	}
	for _, b := range raw {
		if b < '0' || b > '9' {
			return "", false // a float or exponent is not an id
		}
	}
	return string(raw), true
}

// appID reads the app of an authentication: a UUID string, or an app object
// carrying one in "id".
func appID(raw json.RawMessage) string {
	if s, ok := jsonString(raw); ok {
		return s
	}
	var obj struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		if s, ok := jsonString(obj.ID); ok {
			return s
		}
	}
	return ""
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

// DeleteAuthentication deletes one of the user's authentications at Zapier
// (DELETE /v2/authentications/{id}, zapier-api-2026.md §5.1), with the
// user's own access token. gone reports a 404: the authentication is not
// (or no longer) there for this user, which for a disconnect is as good as
// deleted. Any other failure is an *Error; DELETE is idempotent, so the
// client's bounded retries apply.
func (c *Client) DeleteAuthentication(ctx context.Context, apiURL, accessToken, id string) (gone bool, err error) {
	if id == "" {
		return false, fmt.Errorf("%w: delete authentication: empty id", ErrInvalidInput)
	}
	u := strings.TrimRight(apiURL, "/") + "/v2/authentications/" + url.PathEscape(id)
	err = c.doJSON(ctx, "delete authentication", http.MethodDelete, u, accessToken, nil, nil)
	if e, ok := AsError(err); ok && e.Kind == KindRejected && e.StatusCode == http.StatusNotFound {
		return true, nil
	}
	return false, err
}
