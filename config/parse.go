package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/ini.v1"
)

// rawValue is one option as written, after INI parsing, with the file it came from.
type rawValue struct {
	value string
	file  string
}

// rawINI is section -> option -> value, merged over all files (later files win).
type rawINI map[string]map[string]rawValue

func (r rawINI) get(section, name string) (rawValue, bool) {
	v, ok := r[section][name]
	return v, ok
}

// source records where an option's effective value was written: the file and the name used (a
// deprecated name, or valid_interfaces for interface), so errors point at what the operator wrote.
type source struct {
	file string
	name string
}

// Parse reads one kuryr.conf from data. It checks syntax, types and each option's own domain;
// Validate adds the checks across options. Used by tests and the fuzz target; programs use Load.
func Parse(data []byte) (*Config, error) {
	raw := rawINI{}
	if err := readINI(raw, "", data); err != nil {
		return nil, err
	}
	return build(raw)
}

// Load reads the files in order, later files overriding earlier ones option by option, as
// oslo.config does with repeated --config-file. With no paths it returns the defaults. [neutron]
// cloud comes from OS_CLOUD when the files give neither cloud nor auth_url (and auth_type is not
// none). The result has passed Validate.
func Load(paths ...string) (*Config, error) {
	raw := rawINI{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read config file: %w", err)
		}
		if err := readINI(raw, p, data); err != nil {
			return nil, err
		}
	}
	c, err := build(raw)
	if err != nil {
		return nil, err
	}
	c.applyEnv(os.Getenv)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// applyEnv takes clouds.yaml's entry name from OS_CLOUD, as the OpenStack clients do, when the
// files configure no Keystone endpoint of their own.
func (c *Config) applyEnv(getenv func(string) string) {
	n := &c.Neutron
	if n.Cloud != "" || n.AuthURL != "" || n.AuthType == "none" {
		return
	}
	if cloud := getenv("OS_CLOUD"); cloud != "" {
		n.Cloud = cloud
		c.setSource(secNeutron, "cloud", source{file: "environment OS_CLOUD", name: "cloud"})
	}
}

func (c *Config) setSource(section, name string, s source) {
	if c.sources == nil {
		c.sources = map[string]source{}
	}
	c.sources[section+"."+name] = s
}

// readINI parses data with ini.v1 set up like oslo.config's parser (no inline comments, no
// backslash continuations, indented lines continue the previous value) and merges it into raw.
func readINI(raw rawINI, file string, data []byte) error {
	f, err := ini.LoadSources(ini.LoadOptions{
		IgnoreInlineComment:        true,
		IgnoreContinuation:         true,
		AllowPythonMultilineValues: true,
		// Continuation lines are found by peeking ahead; let the peek see the whole file.
		ReaderBufferSize: len(data) + 1,
	}, data)
	if err != nil {
		return fmt.Errorf("%s: not a valid INI file: %w", displayName(file), err)
	}
	for _, s := range f.Sections() {
		// oslo.config treats group names case-insensitively, except DEFAULT.
		name := s.Name()
		if name != ini.DefaultSection {
			name = strings.ToLower(name)
		}
		if raw[name] == nil {
			raw[name] = map[string]rawValue{}
		}
		for _, k := range s.Keys() {
			raw[name][k.Name()] = rawValue{value: joinContinuation(k.Value()), file: file}
		}
	}
	return nil
}

func displayName(file string) string {
	if file == "" {
		return "kuryr.conf"
	}
	return file
}

// joinContinuation turns a value continued on indented lines into oslo's form: each line stripped,
// joined by newlines.
func joinContinuation(v string) string {
	if !strings.Contains(v, "\n") {
		return strings.TrimSpace(v)
	}
	var lines []string
	for l := range strings.SplitSeq(v, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// aliases maps "section.canonical" to the deprecated names of that option.
var aliases = func() map[string][]*option {
	m := map[string][]*option{}
	for i := range options {
		if o := &options[i]; o.deprecatedFor != "" {
			k := o.section + "." + o.deprecatedFor
			m[k] = append(m[k], o)
		}
	}
	return m
}()

// build types the merged raw options into a Config on top of the defaults.
func build(raw rawINI) (*Config, error) {
	c := Default()
	e := newExpander(raw)
	var errs []error

	for _, sec := range slices.Sorted(maps.Keys(raw)) {
		for _, name := range slices.Sorted(maps.Keys(raw[sec])) {
			if lookup(sec, name) == nil && !specialOptions[sec+"."+name] {
				c.unknown = append(c.unknown, sec+"."+name)
				if sec == secDefault {
					c.warnMisplaced(name)
				}
			}
		}
	}

	for i := range options {
		o := &options[i]
		if o.deprecatedFor != "" {
			continue
		}
		rv, name, ok := c.find(raw, o)
		if !ok {
			continue
		}
		c.setSource(o.section, o.name, source{file: rv.file, name: name})
		v, reason := convert(e, o, rv.value)
		switch {
		case reason != "":
			errs = append(errs, c.rawErr(o, name, rv, reason))
		case v == nil:
			c.parseWarnings = append(c.parseWarnings, fmt.Sprintf("[%s] %s is empty: using the default %q",
				o.section, name, format(o.get(c))))
		default:
			o.set(c, v)
		}
	}

	errs = append(errs, c.applySpecial(raw, e)...)
	errs = append(errs, c.checkOptions()...)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// find returns the raw value of o under its name or, failing that, a deprecated name, noting the
// deprecation.
func (c *Config) find(raw rawINI, o *option) (rawValue, string, bool) {
	rv, found := raw.get(o.section, o.name)
	name := o.name
	for _, a := range aliases[o.section+"."+o.name] {
		av, ok := raw.get(a.section, a.name)
		switch {
		case !ok:
		case found:
			c.parseWarnings = append(c.parseWarnings, fmt.Sprintf(
				"[%s] %s is a deprecated name of %s and is ignored because %s is set", o.section, a.name, o.name, o.name))
		default:
			c.parseWarnings = append(c.parseWarnings, fmt.Sprintf(
				"[%s] %s is deprecated: use %s", o.section, a.name, o.name))
			rv, name, found = av, a.name, true
		}
	}
	return rv, name, found
}

// warnMisplaced notes an option written in [DEFAULT] that belongs to another section: oslo ignores
// it there, so the operator's intent is silently lost unless we say so.
func (c *Config) warnMisplaced(name string) {
	var where []string
	for i := range options {
		if o := &options[i]; o.name == name && o.section != secDefault {
			where = append(where, "["+o.section+"] "+name)
		}
	}
	if len(where) > 0 {
		c.parseWarnings = append(c.parseWarnings, fmt.Sprintf(
			"[DEFAULT] %s is not a [DEFAULT] option and has no effect there; did you mean %s?",
			name, strings.Join(where, " or ")))
	}
}

// rawErr reports a value that could not be converted, quoting it as written (secrets masked).
func (c *Config) rawErr(o *option, name string, rv rawValue, reason string) error {
	v := redact(o, rv.value)
	if o.secret {
		v = "***" // even empty: its emptiness is not the point
	}
	return &OptionError{File: rv.file, Section: o.section, Option: name, Value: v, Reason: reason}
}

// applySpecial handles the options that feed or derive from other options.
func (c *Config) applySpecial(raw rawINI, e *expander) []error {
	var errs []error

	// keystoneauth's valid_interfaces (a list) supersedes interface.
	if rv, ok := raw.get(secNeutron, "valid_interfaces"); ok {
		o := lookup(secNeutron, "interface")
		v, reason := convert(e, &option{section: secNeutron, name: "valid_interfaces", kind: kindList}, rv.value)
		if reason != "" {
			errs = append(errs, c.rawErr(o, "valid_interfaces", rv, reason))
		} else if list := v.([]string); len(list) > 0 {
			c.Neutron.Interface = list[0]
			c.setSource(secNeutron, "interface", source{file: rv.file, name: "valid_interfaces"})
			if len(list) > 1 {
				c.parseWarnings = append(c.parseWarnings, fmt.Sprintf(
					"[neutron] valid_interfaces = %q: only the first interface, %s, is used", rv.value, list[0]))
			}
		}
	}
	// keystoneauth accepts the catalog's old spellings publicURL, internalURL, adminURL.
	c.Neutron.Interface = strings.TrimSuffix(c.Neutron.Interface, "URL")

	if s := c.PodVIFNested.WorkerNodesSubnet; s != "" {
		c.parseWarnings = append(c.parseWarnings,
			"[pod_vif_nested] worker_nodes_subnet is deprecated: use worker_nodes_subnets (its value is added to that list)")
		if !slices.Contains(c.PodVIFNested.WorkerNodesSubnets, s) {
			c.PodVIFNested.WorkerNodesSubnets = append(c.PodVIFNested.WorkerNodesSubnets, s)
		}
	}

	// health_address is new; a file that only sets kuryr's port keeps serving on that port.
	h := &c.CNIHealthServer
	_, hasPort := raw.get(secHealth, "port")
	if _, hasAddr := raw.get(secHealth, "health_address"); !hasAddr {
		if port(h.Port) == "" { // an invalid port is reported once, as the port
			h.HealthAddress = net.JoinHostPort("127.0.0.1", strconv.Itoa(h.Port))
		}
	} else if _, p, err := net.SplitHostPort(h.HealthAddress); hasPort && err == nil && p != strconv.Itoa(h.Port) {
		c.parseWarnings = append(c.parseWarnings, fmt.Sprintf(
			"[cni_health_server] port = %d is ignored because health_address = %q is set", h.Port, h.HealthAddress))
	}
	return errs
}

// convert turns a raw value into the option's type. It returns (nil, "") for an empty value of a
// scalar type, which leaves the default in place, and a reason when the value is invalid.
func convert(e *expander, o *option, s string) (any, string) {
	s, err := e.expand(o.section, s)
	if err != nil {
		return nil, err.Error()
	}
	s = strings.TrimSpace(s)
	switch o.kind {
	case kindString:
		return s, ""
	case kindList:
		return splitList(s), ""
	case kindDict:
		return parseDict(s)
	}
	if s == "" {
		return nil, ""
	}
	switch o.kind {
	case kindBool:
		switch strings.ToLower(s) {
		case "true", "1", "on", "yes":
			return true, ""
		case "false", "0", "off", "no":
			return false, ""
		}
		return nil, "not a boolean (true/false, yes/no, on/off, 1/0)"
	case kindInt, kindSeconds:
		n, err := strconv.Atoi(s)
		if errors.Is(err, strconv.ErrRange) {
			return nil, "integer out of range"
		}
		if err != nil {
			return nil, "not an integer"
		}
		if o.kind == kindInt {
			return n, ""
		}
		if n > math.MaxInt64/int(time.Second) || n < math.MinInt64/int(time.Second) {
			return nil, "too many seconds"
		}
		return time.Duration(n) * time.Second, ""
	default: // kindFloat
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, "not a number"
		}
		return f, ""
	}
}

// splitList parses oslo's ListOpt: comma-separated, items trimmed, a trailing comma and empty
// items ignored. Never nil.
func splitList(s string) []string {
	out := []string{}
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// parseDict parses oslo's DictOpt: "k1:v1,k2:v2", split on the first colon of each pair.
func parseDict(s string) (any, string) {
	m := map[string]string{}
	for _, item := range splitList(s) {
		k, v, ok := strings.Cut(item, ":")
		k = strings.TrimSpace(k)
		if !ok {
			return nil, fmt.Sprintf("not a dict: %q is not key:value", item)
		}
		if k == "" {
			return nil, fmt.Sprintf("not a dict: %q has an empty key", item)
		}
		m[k] = strings.TrimSpace(v)
	}
	return m, ""
}

// maxExpandedLen bounds what one value may expand to: references can nest, and without a bound a
// few lines of $a$a$a... would take exponential time and memory.
const maxExpandedLen = 64 << 10

// expander expands oslo.config's templates in option values: $name and ${name} (an option of the
// same section, else of [DEFAULT]), ${section.name}, and the escapes $$ and \$ for a literal "$".
// A reference to nothing is an error, as in oslo, so an unescaped "$" in a password is caught at
// start rather than sent to Keystone mangled.
type expander struct {
	raw  rawINI
	done map[[2]string]string // expanded values of referenced options
	busy map[[2]string]bool   // options being expanded, to catch reference loops
}

func newExpander(raw rawINI) *expander {
	return &expander{raw: raw, done: map[[2]string]string{}, busy: map[[2]string]bool{}}
}

func (e *expander) expand(section, s string) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	s = strings.ReplaceAll(s, `\$`, "$$")
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if b.Len() > maxExpandedLen {
			return "", fmt.Errorf("expands to more than %d bytes", maxExpandedLen)
		}
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		var name string
		end := i + 1
		switch next := s[i+1]; {
		case next == '$':
			b.WriteByte('$')
			i++
			continue
		case next == '{':
			j := strings.IndexByte(s[i+2:], '}')
			if j < 0 || !isIdent(s[i+2:i+2+j]) {
				b.WriteByte('$') // oslo (string.Template) leaves an invalid placeholder as it is
				continue
			}
			name, end = s[i+2:i+2+j], i+3+j
		case isIdentStart(next):
			end = i + 2
			for end < len(s) && isIdentChar(s[end]) {
				end++
			}
			name = s[i+1 : end]
		default:
			b.WriteByte('$')
			continue
		}
		v, err := e.resolve(section, name)
		if err != nil {
			return "", err
		}
		b.WriteString(v)
		i = end - 1
	}
	if b.Len() > maxExpandedLen {
		return "", fmt.Errorf("expands to more than %d bytes", maxExpandedLen)
	}
	return b.String(), nil
}

// resolve finds the value of a $reference: the option in the referring section (as written, else
// its default when we know it), then [DEFAULT]; "group.option" names another section.
func (e *expander) resolve(section, name string) (string, error) {
	candidates := [][2]string{{section, name}, {secDefault, name}}
	if g, opt, ok := strings.Cut(name, "."); ok {
		if g != secDefault {
			g = strings.ToLower(g)
		}
		candidates = [][2]string{{g, opt}}
	}
	for _, cand := range candidates {
		if rv, ok := e.raw.get(cand[0], cand[1]); ok {
			if v, ok := e.done[cand]; ok {
				return v, nil
			}
			if e.busy[cand] {
				return "", fmt.Errorf("cannot expand $%s: it refers back to itself", name)
			}
			e.busy[cand] = true
			v, err := e.expand(cand[0], rv.value)
			delete(e.busy, cand)
			if err != nil {
				return "", err
			}
			e.done[cand] = v
			return v, nil
		}
		if o := lookup(cand[0], cand[1]); o != nil && o.field != nil {
			return format(o.get(Default())), nil
		}
	}
	return "", fmt.Errorf("cannot expand $%s: no such option (write $$ for a literal $)", name)
}

func isIdentStart(b byte) bool {
	return b == '_' || (b|0x20 >= 'a' && b|0x20 <= 'z')
}

func isIdentChar(b byte) bool {
	return isIdentStart(b) || b == '.' || (b >= '0' && b <= '9')
}

// isIdent matches oslo's template identifier [_a-z][._a-z0-9]* (case-insensitive).
func isIdent(s string) bool {
	if s == "" || !isIdentStart(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isIdentChar(s[i]) {
			return false
		}
	}
	return true
}
