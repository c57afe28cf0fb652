// Package version holds the release of caddy-zapier this tree is.
//
// Version is what GET /zapier/status reports as "version", and what the
// build in xcaddy.mk requires the module at, so `caddy list-modules
// --versions` shows it too (a build from a local directory would otherwise
// show "(devel)"). CHANGELOG.md's newest release names the same version; a
// test keeps the two equal. Bump both when releasing, and tag the commit
// "v" + Version.
package version

// Version is the semantic version of this release, without the "v" of the
// Go module tag.
const Version = "0.1.0"
