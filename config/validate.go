package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
)

// validPoolPods is kuryr's VALID_MULTI_POD_POOLS_OPTS: which pod VIF drivers each pool driver can
// serve.
var validPoolPods = map[string][]string{
	"noop":    {"neutron-vif", "nested-vlan", "nested-macvlan", "nested-dpdk"},
	"neutron": {"neutron-vif"},
	"nested":  {"nested-vlan"},
}

// Validate checks every option on its own (as Parse does, so a Config built in code gets the same
// checks) and the rules across options. All problems are reported at once, one per line.
func (c *Config) Validate() error {
	errs := c.checkOptions()

	k := c.Kubernetes
	if slices.Contains(podVIFDrivers, k.PodVIFDriver) && !slices.Contains(supportedPodVIF, k.PodVIFDriver) {
		errs = append(errs, c.optErr(secKubernetes, "pod_vif_driver", k.PodVIFDriver,
			"kuryr's "+k.PodVIFDriver+" driver is not supported here (supported: "+strings.Join(supportedPodVIF, ", ")+")"))
	}

	vp := c.VIFPool
	if vp.PortsPoolMax != 0 && vp.PortsPoolMin > vp.PortsPoolMax {
		errs = append(errs, c.optErr(secVIFPool, "ports_pool_min", vp.PortsPoolMin,
			fmt.Sprintf("must not exceed ports_pool_max (%d) unless ports_pool_max is 0 (no limit)", vp.PortsPoolMax)))
	}

	mapping, err := c.PoolMapping()
	nested := k.VIFPoolDriver == "nested" || k.PodVIFDriver == "nested-vlan"
	if err != nil {
		errs = append(errs, err)
	} else {
		nested = false
		for _, pod := range slices.Sorted(maps.Keys(mapping)) {
			pool := mapping[pod]
			nested = nested || pool == "nested" || pod == "nested-vlan"
			if !slices.Contains(supportedPodVIF, pod) && pod != k.PodVIFDriver {
				sec, name, v := c.mappingOption()
				errs = append(errs, c.optErr(sec, name, v,
					"kuryr's "+pod+" driver is not supported here (supported: "+strings.Join(supportedPodVIF, ", ")+")"))
			}
		}
	}
	if nested && len(c.PodVIFNested.WorkerNodesSubnets) == 0 {
		errs = append(errs, c.optErr(secPodVIFNested, "worker_nodes_subnets", c.PodVIFNested.WorkerNodesSubnets,
			"required for nested pods (nested pool or nested-vlan): a node's trunk is found by its IP on these subnets"))
	}

	if m := c.PoolManager; k.EnableManager && m.SockFile == "" {
		errs = append(errs, c.optErr(secPoolManager, "sock_file", m.SockFile, "required when [kubernetes] enable_manager is true"))
	}
	if b := c.Binding; b.DefaultVIFType == "bridge" && b.LinuxBridge == "" {
		errs = append(errs, c.optErr(secBinding, "linux_bridge", b.LinuxBridge, "required when default_vif_type = bridge"))
	}
	if d := c.CNIDaemon; d.Pprof && !loopbackAddress(d.MetricsAddress) {
		errs = append(errs, c.optErr(secCNIDaemon, "pprof", d.Pprof,
			fmt.Sprintf("needs metrics_address on a loopback address (127.0.0.1, ::1 or localhost), not %q: profiles show memory and must not leave the node", d.MetricsAddress)))
	}
	errs = append(errs, c.checkNeutron()...)
	return errors.Join(errs...)
}

// loopbackAddress tells whether host:port listens on loopback only.
func loopbackAddress(hostPort string) bool {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkNeutron checks that the Keystone settings can authenticate: the options each auth_type
// needs, unless a clouds.yaml entry provides them.
func (c *Config) checkNeutron() []error {
	n := c.Neutron
	var errs []error
	missing := func(name, value, reason string) {
		errs = append(errs, c.optErr(secNeutron, name, value, reason))
	}
	if n.AuthType == "none" {
		if n.EndpointOverride == "" {
			missing("endpoint_override", "", "required when auth_type = none (there is no catalog to find Neutron in)")
		}
		return errs
	}
	if n.Cloud != "" {
		return errs
	}
	if n.AuthURL == "" {
		if n.Username != "" || n.UserID != "" || n.Password != "" || n.ApplicationCredentialID != "" ||
			n.ApplicationCredentialSecret != "" {
			missing("auth_url", "", "required with credentials, unless cloud or OS_CLOUD names a clouds.yaml entry")
		}
		return errs
	}
	switch n.AuthType {
	case "password", "v3password":
		if n.Username == "" && n.UserID == "" {
			missing("username", "", "username or user_id is required with auth_type = "+n.AuthType)
		}
		if n.Password == "" {
			missing("password", "", "required with auth_type = "+n.AuthType)
		}
	case "applicationcredential", "v3applicationcredential":
		if n.ApplicationCredentialSecret == "" {
			missing("application_credential_secret", "", "required with auth_type = "+n.AuthType)
		}
		if n.ApplicationCredentialID == "" &&
			(n.ApplicationCredentialName == "" || (n.Username == "" && n.UserID == "")) {
			missing("application_credential_id", "",
				"required with auth_type = "+n.AuthType+" (or application_credential_name with username or user_id)")
		}
	}
	return errs
}

// checkOptions runs each option's own check.
func (c *Config) checkOptions() []error {
	var errs []error
	for i := range options {
		o := &options[i]
		if o.check == nil {
			continue
		}
		v := o.get(c)
		if reason := o.check(v); reason != "" {
			errs = append(errs, c.optErr(o.section, o.name, v, reason))
		}
	}
	return errs
}

// optErr builds the error for an option's effective value, naming the file and the name under
// which it was written when it came from a file.
func (c *Config) optErr(section, name string, v any, reason string) error {
	e := &OptionError{Section: section, Option: name, Value: format(v), Reason: reason}
	if src, ok := c.sources[section+"."+name]; ok {
		e.File, e.Option = src.file, src.name
	}
	e.Value = redact(lookup(section, name), e.Value)
	return e
}

// mappingOption names the option the pool mapping came from, and its value.
func (c *Config) mappingOption() (section, name string, value any) {
	switch vp := c.VIFPool; {
	case len(vp.VIFPoolMapping) > 0:
		return secVIFPool, "vif_pool_mapping", vp.VIFPoolMapping
	case len(vp.PoolsVIFDrivers) > 0:
		return secVIFPool, "pools_vif_drivers", vp.PoolsVIFDrivers
	}
	return secKubernetes, "vif_pool_driver", c.Kubernetes.VIFPoolDriver
}

// PoolMapping returns which pool driver serves each pod VIF driver, as kuryr's MultiVIFPool
// decides it: vif_pool_mapping; else pools_vif_drivers inverted (deprecated, see Warnings); else
// {pod_vif_driver: vif_pool_driver}. Every pair must be allowed by kuryr's
// VALID_MULTI_POD_POOLS_OPTS: noop with any pod driver, neutron only with neutron-vif, nested
// only with nested-vlan.
func (c *Config) PoolMapping() (map[string]string, error) {
	vp, k := c.VIFPool, c.Kubernetes
	sec, name, value := c.mappingOption()
	var m map[string]string
	var errs []error
	switch name {
	case "vif_pool_mapping":
		m = maps.Clone(vp.VIFPoolMapping)
	case "pools_vif_drivers":
		m = map[string]string{}
		for _, pool := range slices.Sorted(maps.Keys(vp.PoolsVIFDrivers)) {
			pod := vp.PoolsVIFDrivers[pool]
			if other, dup := m[pod]; dup {
				errs = append(errs, c.optErr(sec, name, value, fmt.Sprintf(
					"pod VIF driver %s is mapped to two pool drivers, %s and %s", pod, other, pool)))
			}
			m[pod] = pool
		}
	default:
		if k.VIFPoolDriver == "multi_pool" {
			return nil, c.optErr(sec, name, value,
				"needs [vif_pool] vif_pool_mapping to say which pool driver serves which pod VIF driver")
		}
		m = map[string]string{k.PodVIFDriver: k.VIFPoolDriver}
	}
	for _, pod := range slices.Sorted(maps.Keys(m)) {
		pool := m[pod]
		allowed, known := validPoolPods[pool]
		switch {
		case !known:
			errs = append(errs, c.optErr(sec, name, value, fmt.Sprintf(
				"unknown pool driver %q for pod VIF driver %s (one of noop, neutron, nested)", pool, pod)))
		case !slices.Contains(allowed, pod):
			errs = append(errs, c.optErr(sec, name, value, fmt.Sprintf(
				"a %s pool cannot serve pod VIF driver %s (%s pools serve %s)", pool, pod, pool, strings.Join(allowed, ", "))))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}
