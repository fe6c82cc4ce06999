package config

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// docRow is one option row of docs/configuration.md.
type docRow struct {
	kind, def, meaning string
}

// readDocs returns the option rows of docs/configuration.md by "section.option".
func readDocs(t *testing.T) map[string]docRow {
	t.Helper()
	data, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	heading := regexp.MustCompile("^## \\[([^]]+)\\]$")
	row := regexp.MustCompile("^\\| `([a-z0-9_]+)` \\| ([^|]+) \\| ([^|]+) \\| (.*) \\|$")
	rows := map[string]docRow{}
	section := ""
	for line := range strings.SplitSeq(string(data), "\n") {
		if m := heading.FindStringSubmatch(line); m != nil {
			section = m[1]
			continue
		}
		if strings.HasPrefix(line, "## ") || strings.HasPrefix(line, "### ") {
			section = ""
		}
		if m := row.FindStringSubmatch(line); m != nil && section != "" {
			key := section + "." + m[1]
			if _, dup := rows[key]; dup {
				t.Errorf("docs: %s listed twice", key)
			}
			rows[key] = docRow{kind: m[2], def: m[3], meaning: m[4]}
		}
	}
	return rows
}

func docDefault(v any) string {
	if s := format(v); s != "" {
		return "`" + s + "`"
	}
	return "(empty)"
}

// The option reference lists every option with its type and default, marks the new ones, and
// lists nothing that does not exist.
func TestDocsListEveryOption(t *testing.T) {
	rows := readDocs(t)
	d := Default()
	for _, o := range options {
		key := o.section + "." + o.name
		r, ok := rows[key]
		if !ok {
			t.Errorf("docs/configuration.md lacks [%s] %s", o.section, o.name)
			continue
		}
		delete(rows, key)
		if r.kind != o.kind.String() {
			t.Errorf("docs: [%s] %s has type %q, want %q", o.section, o.name, r.kind, o.kind)
		}
		want := "see `" + o.deprecatedFor + "`"
		if o.field != nil {
			want = docDefault(o.get(d))
		}
		if r.def != want {
			t.Errorf("docs: [%s] %s has default %q, want %q", o.section, o.name, r.def, want)
		}
		if isNew := strings.HasPrefix(r.meaning, "**New.**"); isNew != o.isNew {
			t.Errorf("docs: [%s] %s marked new = %v, want %v", o.section, o.name, isNew, o.isNew)
		}
		if strings.TrimSpace(strings.TrimPrefix(r.meaning, "**New.**")) == "" {
			t.Errorf("docs: [%s] %s has no meaning", o.section, o.name)
		}
	}
	for key := range specialOptions {
		delete(rows, key)
	}
	for key := range rows {
		t.Errorf("docs/configuration.md lists %s, which config does not know", key)
	}
}
