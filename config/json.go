package config

import (
	"encoding/json"
	"net/url"
	"strings"
	"time"
)

// RedactedJSON renders the effective settings as {"section": {"option": value}} with kuryr's
// names, seconds as integers, and secrets (password, application_credential_secret) as "***" when
// set. It is what --validate-config prints.
func (c *Config) RedactedJSON() ([]byte, error) {
	out := map[string]map[string]any{}
	for i := range options {
		o := &options[i]
		if o.field == nil {
			continue // deprecated names are folded into their successor
		}
		if out[o.section] == nil {
			out[o.section] = map[string]any{}
		}
		v := o.get(c)
		switch x := v.(type) {
		case time.Duration:
			v = int64(x / time.Second)
		case []string:
			if x == nil {
				v = []string{}
			}
		case map[string]string:
			if x == nil {
				v = map[string]string{}
			}
		case string:
			v = redact(o, x)
		}
		out[o.section][o.name] = v
	}
	return json.MarshalIndent(out, "", "  ")
}

// redact masks a value for display: a secret option whole, any other the password of a URL's
// userinfo ("http://user:***@keystone/v3"), which is as much a credential.
func redact(o *option, v string) string {
	if v == "" {
		return v
	}
	if o != nil && o.secret {
		return "***"
	}
	scheme, rest, ok := strings.Cut(v, "://")
	if !ok {
		return v
	}
	if u, err := url.Parse(v); err == nil {
		if _, hasPass := u.User.Password(); !hasPass {
			return v
		}
		u.User = url.User(u.User.Username())
		user := "//" + u.User.String() + "@"
		return strings.Replace(u.String(), user, strings.TrimSuffix(user, "@")+":***@", 1)
	}
	// Not a valid URL (which is why it may be shown in an error): mask everything between the
	// user name and the last '@' before any query or fragment.
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		rest = rest[:i]
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return v
	}
	user, _, hasPass := strings.Cut(rest[:at], ":")
	if !hasPass {
		return v
	}
	return scheme + "://" + user + ":***" + v[len(scheme)+3+at:]
}
