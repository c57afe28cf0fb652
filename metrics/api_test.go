package metrics

import "testing"

func TestAPIEndpointIsBounded(t *testing.T) {
	for path, want := range map[string]string{
		"/v2/actions":                                "/v2/actions",
		"/v2/actions/":                               "/v2/actions",
		"/v2/actions/core:abc/inputs":                "/v2/actions/{id}/inputs",
		"/v2/actions/x/inputs/y/choices":             "/v2/actions/{id}/inputs/{id}/choices",
		"/v2/action-runs/123e4567":                   "/v2/action-runs/{id}",
		"/v2/authentications/a/b/c/d/e/f/g":          "/v2/authentications/{id}/{id}/{id}/{id}",
		"/v2/unknown/1":                              "other",
		"/v1/actions":                                "other",
		"":                                           "other",
		"/v2":                                        "other",
		"/v2/whitelabel/apps":                        "/v2/whitelabel/apps",
		"/actions/v1/stored-actions":                 "/actions/v1/stored-actions",
		"/actions/v1/stored-actions/a1/run":          "/actions/v1/stored-actions/{id}/run",
		"/actions/v1/stored-actions/a1/runs/r1":      "/actions/v1/stored-actions/{id}/runs/{id}",
		"/actions/v2/stored-actions":                 "other",
		"/v2/echo/anything/the/client/sends/in/here": "/v2/echo/{id}/{id}/{id}/{id}",
	} {
		if got := APIEndpoint(path); got != want {
			t.Errorf("APIEndpoint(%q) = %q, want %q", path, got, want)
		}
	}
}
