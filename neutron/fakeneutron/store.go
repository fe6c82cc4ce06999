package fakeneutron

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func stamp(t time.Time) string { return t.Format("2006-01-02T15:04:05Z") }

// listParams are the query parameters that are not attribute filters.
var listParams = map[string]bool{"limit": true, "marker": true, "page_reverse": true, "fields": true,
	"sort_key": true, "sort_dir": true, "tags": true, "tags-any": true, "not-tags": true, "not-tags-any": true}

// list filters views (the JSON form of each object) by the query, sorts them by id and cuts the
// page given by limit and marker, like Neutron: unknown filter attributes are a 400
// (filter-validation), several values of one attribute match any of them, tags match all of.
func list(views []map[string]any, q url.Values, base, collection string, special func(k string, vs []string, v map[string]any) (bool, bool)) (map[string]any, error) {
	for k := range q {
		if listParams[k] {
			continue
		}
		if _, handled := special(k, nil, nil); handled {
			continue
		}
		if len(views) > 0 {
			if _, ok := views[0][k]; !ok {
				return nil, errf(http.StatusBadRequest, "HTTPBadRequest", "['%s'] is invalid attribute for filtering", k)
			}
		}
	}
	var out []map[string]any
	for _, v := range views {
		if match(v, q, special) {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(a, b map[string]any) int { return strings.Compare(a["id"].(string), b["id"].(string)) })

	if m := q.Get("marker"); m != "" {
		i := slices.IndexFunc(out, func(v map[string]any) bool { return v["id"].(string) > m })
		if i < 0 {
			i = len(out)
		}
		out = out[i:]
	}
	var links []map[string]string
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return nil, badRequest("limit %q", l)
		}
		if n > 0 && len(out) >= n {
			out = out[:n]
			next := cloneValues(q)
			next.Set("marker", out[n-1]["id"].(string))
			links = append(links, map[string]string{"rel": "next", "href": base + collection + "?" + next.Encode()})
		}
		if q.Get("marker") != "" && len(out) > 0 {
			prev := cloneValues(q)
			prev.Set("marker", out[0]["id"].(string))
			prev.Set("page_reverse", "True")
			links = append(links, map[string]string{"rel": "previous", "href": base + collection + "?" + prev.Encode()})
		}
	}
	if fields := q["fields"]; len(fields) > 0 {
		for i, v := range out {
			sel := map[string]any{}
			for _, f := range fields {
				if x, ok := v[f]; ok {
					sel[f] = x
				}
			}
			out[i] = sel
		}
	}
	if out == nil {
		out = []map[string]any{}
	}
	key := strings.ReplaceAll(collection, "-", "_")
	res := map[string]any{key: out}
	if links != nil {
		res[key+"_links"] = links
	}
	return res, nil
}

func cloneValues(q url.Values) url.Values {
	c := url.Values{}
	for k, v := range q {
		if k != "marker" && k != "page_reverse" {
			c[k] = slices.Clone(v)
		}
	}
	return c
}

func match(v map[string]any, q url.Values, special func(string, []string, map[string]any) (bool, bool)) bool {
	for k, vs := range q {
		switch k {
		case "tags", "tags-any", "not-tags", "not-tags-any":
			if !matchTags(v, k, vs) {
				return false
			}
			continue
		}
		if listParams[k] {
			continue
		}
		if ok, handled := special(k, vs, v); handled {
			if !ok {
				return false
			}
			continue
		}
		if !slices.Contains(vs, scalar(v[k])) {
			return false
		}
	}
	return true
}

// scalar renders an attribute as a query value ("True"/"False" for booleans, as Neutron accepts).
func scalar(x any) string {
	switch t := x.(type) {
	case string:
		return t
	case bool:
		if t {
			return "True"
		}
		return "False"
	case nil:
		return ""
	}
	return fmt.Sprint(x)
}

func matchTags(v map[string]any, k string, vs []string) bool {
	have, _ := v["tags"].([]string)
	var want []string
	for _, s := range vs {
		want = append(want, strings.Split(s, ",")...)
	}
	count := 0
	for _, w := range want {
		if slices.Contains(have, w) {
			count++
		}
	}
	switch k {
	case "tags":
		return count == len(want)
	case "tags-any":
		return count > 0
	case "not-tags":
		return count != len(want)
	default: // not-tags-any
		return count == 0
	}
}

// boolFilter accepts the values Neutron accepts for a boolean filter.
func boolFilter(vs []string, b bool) bool {
	for _, s := range vs {
		if strings.EqualFold(s, strconv.FormatBool(b)) {
			return true
		}
	}
	return false
}

func noSpecial(string, []string, map[string]any) (bool, bool) { return false, false }

// projectOf is the project of a create body: project_id or tenant_id. Neutron's noauth mode does
// not take it from X-Project-Id.
func projectOf(b map[string]any) (string, error) {
	for _, k := range []string{"project_id", "tenant_id"} {
		if p, ok := b[k].(string); ok && p != "" {
			return p, nil
		}
	}
	return "", errf(http.StatusBadRequest, "HTTPBadRequest", "Running without keystone AuthN requires that tenant_id is specified")
}

// checkAttrs refuses attributes outside allowed, as Neutron does ("Unrecognized attribute(s)").
func checkAttrs(b map[string]any, allowed ...string) error {
	var bad []string
	for k := range b {
		if !slices.Contains(allowed, k) {
			bad = append(bad, k)
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return errf(http.StatusBadRequest, "HTTPBadRequest", "Unrecognized attribute(s) '%s'", strings.Join(bad, ", "))
	}
	return nil
}

func str(b map[string]any, k string) string {
	s, _ := b[k].(string)
	return s
}

func strList(b map[string]any, k string) ([]string, error) {
	raw, ok := b[k]
	if !ok || raw == nil {
		return nil, nil
	}
	items, ok := raw.([]any)
	if !ok {
		return nil, badRequest("'%v' is not a list", raw)
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		s, ok := it.(string)
		if !ok {
			return nil, badRequest("'%v' is not a string", it)
		}
		out = append(out, s)
	}
	return out, nil
}
