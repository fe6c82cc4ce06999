package config

import (
	"encoding/json"
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
			if o.secret && x != "" {
				v = "***"
			}
		}
		out[o.section][o.name] = v
	}
	return json.MarshalIndent(out, "", "  ")
}
