package config

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// kind is an oslo.config option type.
type kind int

const (
	kindString  kind = iota
	kindBool         // oslo BoolOpt
	kindInt          // oslo IntOpt
	kindSeconds      // oslo IntOpt holding seconds; a time.Duration here
	kindFloat        // oslo FloatOpt
	kindList         // oslo ListOpt
	kindDict         // oslo DictOpt
)

func (k kind) String() string {
	return [...]string{"string", "bool", "int", "int (seconds)", "float", "list", "dict"}[k]
}

// option describes one kuryr.conf option. The table below drives parsing, per-option checks,
// RedactedJSON and the documentation test, so an option exists in exactly one place.
type option struct {
	section string
	name    string
	kind    kind
	field   func(*Config) any // pointer to the Config field
	// check returns why a value is unacceptable for this option on its own, or "".
	check func(v any) string
	// deprecatedFor names the option of the same section this one is an old name of.
	deprecatedFor string
	secret        bool
	isNew         bool // not in kuryr-kubernetes; added by this project
}

// The section names, as oslo normalises them (lower case, DEFAULT kept).
const (
	secDefault      = "DEFAULT"
	secKubernetes   = "kubernetes"
	secVIFPool      = "vif_pool"
	secNeutronDef   = "neutron_defaults"
	secPodVIFNested = "pod_vif_nested"
	secBinding      = "binding"
	secPoolManager  = "pool_manager"
	secNSSubnet     = "namespace_subnet"
	secCNIDaemon    = "cni_daemon"
	secHealth       = "cni_health_server"
	secNeutron      = "neutron"
	secNodeCaching  = "node_driver_caching"
)

// Values accepted per enumerated option: kuryr's, so an existing file parses; Validate then
// rejects what this project does not implement.
var (
	vifPoolDrivers     = []string{"noop", "neutron", "nested", "multi_pool"}
	podVIFDrivers      = []string{"neutron-vif", "nested-vlan", "nested-macvlan", "nested-dpdk"}
	supportedPodVIF    = []string{"neutron-vif", "nested-vlan"}
	authTypes          = []string{"password", "v3password", "v3applicationcredential", "applicationcredential", "none"}
	endpointInterfaces = []string{"public", "internal", "admin"}
)

// neutronTagMax is Neutron's limit on one tag (neutron/extensions/tagging.py MAX_TAG_LEN).
const neutronTagMax = 60

// clusterTagPrefix is how cluster_name is tagged on every port.
const clusterTagPrefix = "kuryr-cluster="

var options = []option{
	{section: secDefault, name: "debug", kind: kindBool, field: func(c *Config) any { return &c.Default.Debug }},
	{section: secDefault, name: "log_file", kind: kindString, field: func(c *Config) any { return &c.Default.LogFile }},

	{section: secKubernetes, name: "vif_pool_driver", kind: kindString, field: func(c *Config) any { return &c.Kubernetes.VIFPoolDriver }, check: oneOf(vifPoolDrivers...)},
	{section: secKubernetes, name: "pod_vif_driver", kind: kindString, field: func(c *Config) any { return &c.Kubernetes.PodVIFDriver }, check: oneOf(podVIFDrivers...)},
	{section: secKubernetes, name: "enable_manager", kind: kindBool, field: func(c *Config) any { return &c.Kubernetes.EnableManager }},
	{section: secKubernetes, name: "enabled_handlers", kind: kindList, field: func(c *Config) any { return &c.Kubernetes.EnabledHandlers }},
	{section: secKubernetes, name: "pod_subnets_driver", kind: kindString, field: func(c *Config) any { return &c.Kubernetes.PodSubnetsDriver }, check: oneOf("default", "namespace")},
	{section: secKubernetes, name: "pod_security_groups_driver", kind: kindString, field: func(c *Config) any { return &c.Kubernetes.PodSecurityGroupsDriver }, check: oneOf("default", "policy")},
	{section: secKubernetes, name: "pod_project_driver", kind: kindString, field: func(c *Config) any { return &c.Kubernetes.PodProjectDriver }, check: oneOf("default", "annotation")},
	{section: secKubernetes, name: "port_debug", kind: kindBool, field: func(c *Config) any { return &c.Kubernetes.PortDebug }},
	{section: secKubernetes, name: "api_root", kind: kindString, field: func(c *Config) any { return &c.Kubernetes.APIRoot }, check: httpURL},
	{section: secKubernetes, name: "token_file", kind: kindString, field: func(c *Config) any { return &c.Kubernetes.TokenFile }},
	{section: secKubernetes, name: "ssl_ca_crt_file", kind: kindString, field: func(c *Config) any { return &c.Kubernetes.SSLCACrtFile }},
	{section: secKubernetes, name: "ssl_client_crt_file", kind: kindString, field: func(c *Config) any { return &c.Kubernetes.SSLClientCrtFile }},
	{section: secKubernetes, name: "ssl_client_key_file", kind: kindString, field: func(c *Config) any { return &c.Kubernetes.SSLClientKeyFile }},
	{section: secKubernetes, name: "ssl_verify_server_crt", kind: kindBool, field: func(c *Config) any { return &c.Kubernetes.SSLVerifyServerCrt }},
	{section: secKubernetes, name: "kubeconfig", kind: kindString, field: func(c *Config) any { return &c.Kubernetes.Kubeconfig }, isNew: true},
	{section: secKubernetes, name: "cluster_name", kind: kindString, field: func(c *Config) any { return &c.Kubernetes.ClusterName }, check: clusterName, isNew: true},
	{section: secKubernetes, name: "controller_ha", kind: kindBool, field: func(c *Config) any { return &c.Kubernetes.ControllerHA }},
	{section: secKubernetes, name: "watch_reconcile_period", kind: kindInt, field: func(c *Config) any { return &c.Kubernetes.WatchReconcilePeriod }, check: atLeast(0)},
	{section: secKubernetes, name: "use_events", kind: kindBool, field: func(c *Config) any { return &c.Kubernetes.UseEvents }},

	{section: secVIFPool, name: "ports_pool_max", kind: kindInt, field: func(c *Config) any { return &c.VIFPool.PortsPoolMax }, check: atLeast(0)},
	{section: secVIFPool, name: "ports_pool_min", kind: kindInt, field: func(c *Config) any { return &c.VIFPool.PortsPoolMin }, check: atLeast(0)},
	{section: secVIFPool, name: "ports_pool_batch", kind: kindInt, field: func(c *Config) any { return &c.VIFPool.PortsPoolBatch }, check: atLeast(1)},
	{section: secVIFPool, name: "ports_pool_update_frequency", kind: kindSeconds, field: func(c *Config) any { return &c.VIFPool.PortsPoolUpdateFrequency }, check: atLeast(1)},
	{section: secVIFPool, name: "vif_pool_mapping", kind: kindDict, field: func(c *Config) any { return &c.VIFPool.VIFPoolMapping }},
	{section: secVIFPool, name: "pools_vif_drivers", kind: kindDict, field: func(c *Config) any { return &c.VIFPool.PoolsVIFDrivers }},
	{section: secVIFPool, name: "ports_pool_cooldown", kind: kindSeconds, field: func(c *Config) any { return &c.VIFPool.PortsPoolCooldown }, check: atLeast(0), isNew: true},
	{section: secVIFPool, name: "ports_pool_idle_timeout", kind: kindSeconds, field: func(c *Config) any { return &c.VIFPool.PortsPoolIdleTimeout }, check: atLeast(0), isNew: true},

	{section: secNeutronDef, name: "project", kind: kindString, field: func(c *Config) any { return &c.NeutronDefaults.Project }},
	{section: secNeutronDef, name: "pod_subnet", kind: kindString, field: func(c *Config) any { return &c.NeutronDefaults.PodSubnet }},
	{section: secNeutronDef, name: "pod_security_groups", kind: kindList, field: func(c *Config) any { return &c.NeutronDefaults.PodSecurityGroups }},
	{section: secNeutronDef, name: "resource_tags", kind: kindList, field: func(c *Config) any { return &c.NeutronDefaults.ResourceTags }, check: neutronTags},
	{section: secNeutronDef, name: "ovs_bridge", kind: kindString, field: func(c *Config) any { return &c.NeutronDefaults.OVSBridge }, check: ifName},
	{section: secNeutronDef, name: "network_device_mtu", kind: kindInt, field: func(c *Config) any { return &c.NeutronDefaults.NetworkDeviceMTU }, check: mtu},
	{section: secNeutronDef, name: "external_svc_net", kind: kindString, field: func(c *Config) any { return &c.NeutronDefaults.ExternalSvcNet }},
	{section: secNeutronDef, name: "external_svc_subnet", kind: kindString, field: func(c *Config) any { return &c.NeutronDefaults.ExternalSvcSubnet }},
	{section: secNeutronDef, name: "service_subnet", kind: kindString, field: func(c *Config) any { return &c.NeutronDefaults.ServiceSubnet }},

	{section: secPodVIFNested, name: "worker_nodes_subnets", kind: kindList, field: func(c *Config) any { return &c.PodVIFNested.WorkerNodesSubnets }},
	{section: secPodVIFNested, name: "worker_nodes_subnet", kind: kindString, field: func(c *Config) any { return &c.PodVIFNested.WorkerNodesSubnet }},
	{section: secPodVIFNested, name: "rev_update_attempts", kind: kindInt, field: func(c *Config) any { return &c.PodVIFNested.RevUpdateAttempts }, check: atLeast(0)},

	{section: secBinding, name: "default_driver", kind: kindString, field: func(c *Config) any { return &c.Binding.Driver }},
	{section: secBinding, name: "driver", kind: kindString, deprecatedFor: "default_driver"},
	{section: secBinding, name: "link_iface", kind: kindString, field: func(c *Config) any { return &c.Binding.LinkIface }, check: ifName},
	{section: secBinding, name: "enabled_drivers", kind: kindList, field: func(c *Config) any { return &c.Binding.EnabledDrivers }},
	{section: secBinding, name: "veth_dst_prefix", kind: kindString, field: func(c *Config) any { return &c.Binding.VethDstPrefix }},
	{section: secBinding, name: "default_vif_type", kind: kindString, field: func(c *Config) any { return &c.Binding.DefaultVIFType }, check: oneOf("ovs", "bridge"), isNew: true},
	{section: secBinding, name: "linux_bridge", kind: kindString, field: func(c *Config) any { return &c.Binding.LinuxBridge }, check: ifName, isNew: true},
	{section: secBinding, name: "ovsdb_connection", kind: kindString, field: func(c *Config) any { return &c.Binding.OVSDBConnection }, isNew: true},

	{section: secPoolManager, name: "sock_file", kind: kindString, field: func(c *Config) any { return &c.PoolManager.SockFile }, check: optional(absPath)},
	{section: secPoolManager, name: "sock_group", kind: kindString, field: func(c *Config) any { return &c.PoolManager.SockGroup }, isNew: true},

	{section: secNSSubnet, name: "pod_router", kind: kindString, field: func(c *Config) any { return &c.NamespaceSubnet.PodRouter }},
	{section: secNSSubnet, name: "pod_subnet_pool", kind: kindString, field: func(c *Config) any { return &c.NamespaceSubnet.PodSubnetPool }},

	{section: secCNIDaemon, name: "bind_address", kind: kindString, field: func(c *Config) any { return &c.CNIDaemon.BindAddress }, check: hostPort},
	{section: secCNIDaemon, name: "worker_num", kind: kindInt, field: func(c *Config) any { return &c.CNIDaemon.WorkerNum }, check: atLeast(0)},
	{section: secCNIDaemon, name: "vif_annotation_timeout", kind: kindSeconds, field: func(c *Config) any { return &c.CNIDaemon.VIFAnnotationTimeout }, check: atLeast(1)},
	{section: secCNIDaemon, name: "pyroute2_timeout", kind: kindInt, field: func(c *Config) any { return &c.CNIDaemon.PyRoute2Timeout }, check: atLeast(0)},
	{section: secCNIDaemon, name: "docker_mode", kind: kindBool, field: func(c *Config) any { return &c.CNIDaemon.DockerMode }},
	{section: secCNIDaemon, name: "netns_proc_dir", kind: kindString, field: func(c *Config) any { return &c.CNIDaemon.NetnsProcDir }},
	{section: secCNIDaemon, name: "cni_failures_count", kind: kindInt, field: func(c *Config) any { return &c.CNIDaemon.CNIFailuresCount }, check: atLeast(0)},
	{section: secCNIDaemon, name: "socket_path", kind: kindString, field: func(c *Config) any { return &c.CNIDaemon.SocketPath }, check: absPath, isNew: true},
	{section: secCNIDaemon, name: "socket_group", kind: kindString, field: func(c *Config) any { return &c.CNIDaemon.SocketGroup }, isNew: true},
	{section: secCNIDaemon, name: "pool_wait_timeout", kind: kindSeconds, field: func(c *Config) any { return &c.CNIDaemon.PoolWaitTimeout }, check: atLeast(0), isNew: true},
	{section: secCNIDaemon, name: "checkpoint_path", kind: kindString, field: func(c *Config) any { return &c.CNIDaemon.CheckpointPath }, check: absPath, isNew: true},
	{section: secCNIDaemon, name: "metrics_address", kind: kindString, field: func(c *Config) any { return &c.CNIDaemon.MetricsAddress }, check: optional(hostPort), isNew: true},
	{section: secCNIDaemon, name: "pprof", kind: kindBool, field: func(c *Config) any { return &c.CNIDaemon.Pprof }, isNew: true},

	{section: secHealth, name: "port", kind: kindInt, field: func(c *Config) any { return &c.CNIHealthServer.Port }, check: port},
	{section: secHealth, name: "health_address", kind: kindString, field: func(c *Config) any { return &c.CNIHealthServer.HealthAddress }, check: hostPort, isNew: true},
	{section: secHealth, name: "max_memory_usage", kind: kindInt, field: func(c *Config) any { return &c.CNIHealthServer.MaxMemoryUsage }, check: atLeast(-1)},

	{section: secNeutron, name: "auth_type", kind: kindString, field: func(c *Config) any { return &c.Neutron.AuthType }, check: oneOf(authTypes...)},
	{section: secNeutron, name: "auth_plugin", kind: kindString, deprecatedFor: "auth_type"},
	{section: secNeutron, name: "auth_url", kind: kindString, field: func(c *Config) any { return &c.Neutron.AuthURL }, check: httpURL},
	{section: secNeutron, name: "username", kind: kindString, field: func(c *Config) any { return &c.Neutron.Username }},
	{section: secNeutron, name: "user_name", kind: kindString, deprecatedFor: "username"},
	{section: secNeutron, name: "password", kind: kindString, field: func(c *Config) any { return &c.Neutron.Password }, secret: true},
	{section: secNeutron, name: "user_id", kind: kindString, field: func(c *Config) any { return &c.Neutron.UserID }},
	{section: secNeutron, name: "project_name", kind: kindString, field: func(c *Config) any { return &c.Neutron.ProjectName }},
	{section: secNeutron, name: "tenant_name", kind: kindString, deprecatedFor: "project_name"},
	{section: secNeutron, name: "project_id", kind: kindString, field: func(c *Config) any { return &c.Neutron.ProjectID }},
	{section: secNeutron, name: "tenant_id", kind: kindString, deprecatedFor: "project_id"},
	{section: secNeutron, name: "user_domain_name", kind: kindString, field: func(c *Config) any { return &c.Neutron.UserDomainName }},
	{section: secNeutron, name: "user_domain_id", kind: kindString, field: func(c *Config) any { return &c.Neutron.UserDomainID }},
	{section: secNeutron, name: "project_domain_name", kind: kindString, field: func(c *Config) any { return &c.Neutron.ProjectDomainName }},
	{section: secNeutron, name: "project_domain_id", kind: kindString, field: func(c *Config) any { return &c.Neutron.ProjectDomainID }},
	{section: secNeutron, name: "domain_name", kind: kindString, field: func(c *Config) any { return &c.Neutron.DomainName }},
	{section: secNeutron, name: "region_name", kind: kindString, field: func(c *Config) any { return &c.Neutron.RegionName }},
	{section: secNeutron, name: "interface", kind: kindString, field: func(c *Config) any { return &c.Neutron.Interface }, check: oneOf(endpointInterfaces...)},
	{section: secNeutron, name: "endpoint_override", kind: kindString, field: func(c *Config) any { return &c.Neutron.EndpointOverride }, check: httpURL},
	{section: secNeutron, name: "application_credential_id", kind: kindString, field: func(c *Config) any { return &c.Neutron.ApplicationCredentialID }},
	{section: secNeutron, name: "application_credential_secret", kind: kindString, field: func(c *Config) any { return &c.Neutron.ApplicationCredentialSecret }, secret: true},
	{section: secNeutron, name: "application_credential_name", kind: kindString, field: func(c *Config) any { return &c.Neutron.ApplicationCredentialName }},
	{section: secNeutron, name: "cafile", kind: kindString, field: func(c *Config) any { return &c.Neutron.CAFile }},
	{section: secNeutron, name: "insecure", kind: kindBool, field: func(c *Config) any { return &c.Neutron.Insecure }},
	{section: secNeutron, name: "timeout", kind: kindSeconds, field: func(c *Config) any { return &c.Neutron.Timeout }, check: atLeast(0)},
	{section: secNeutron, name: "cloud", kind: kindString, field: func(c *Config) any { return &c.Neutron.Cloud }, isNew: true},
	{section: secNeutron, name: "qps", kind: kindFloat, field: func(c *Config) any { return &c.Neutron.QPS }, check: positiveFloat, isNew: true},
	{section: secNeutron, name: "burst", kind: kindInt, field: func(c *Config) any { return &c.Neutron.Burst }, check: atLeast(1), isNew: true},
	{section: secNeutron, name: "max_concurrent_requests", kind: kindInt, field: func(c *Config) any { return &c.Neutron.MaxConcurrentRequests }, check: atLeast(1), isNew: true},
	{section: secNeutron, name: "list_page_size", kind: kindInt, field: func(c *Config) any { return &c.Neutron.ListPageSize }, check: atLeast(0), isNew: true},

	{section: secNodeCaching, name: "caching", kind: kindBool, field: func(c *Config) any { return &c.NodeDriverCaching.Caching }},
	{section: secNodeCaching, name: "cache_time", kind: kindSeconds, field: func(c *Config) any { return &c.NodeDriverCaching.CacheTime }, check: atLeast(0)},
}

// specialOptions are recognised options handled outside the table because they feed a field of
// another option: keystoneauth's valid_interfaces list replaces the older single interface.
var specialOptions = map[string]bool{
	secNeutron + ".valid_interfaces": true,
}

// optionIndex finds the table entry of section.name.
var optionIndex = func() map[string]*option {
	m := make(map[string]*option, len(options))
	for i := range options {
		m[options[i].section+"."+options[i].name] = &options[i]
	}
	return m
}()

// lookup returns the option section.name, or nil.
func lookup(section, name string) *option {
	return optionIndex[section+"."+name]
}

// get returns the value of the option's field in c (string, bool, int, time.Duration, float64,
// []string or map[string]string).
func (o *option) get(c *Config) any {
	switch p := o.field(c).(type) {
	case *string:
		return *p
	case *bool:
		return *p
	case *int:
		return *p
	case *time.Duration:
		return *p
	case *float64:
		return *p
	case *[]string:
		return *p
	case *map[string]string:
		return *p
	}
	panic(fmt.Sprintf("config: option %s.%s has an unsupported field type", o.section, o.name))
}

// set stores a converted value in the option's field of c.
func (o *option) set(c *Config, v any) {
	switch p := o.field(c).(type) {
	case *string:
		*p = v.(string)
	case *bool:
		*p = v.(bool)
	case *int:
		*p = v.(int)
	case *time.Duration:
		*p = v.(time.Duration)
	case *float64:
		*p = v.(float64)
	case *[]string:
		*p = v.([]string)
	case *map[string]string:
		*p = v.(map[string]string)
	default:
		panic(fmt.Sprintf("config: option %s.%s has an unsupported field type", o.section, o.name))
	}
}

// format renders a typed value the way it would be written in kuryr.conf.
func format(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bool:
		if x {
			return "true"
		}
		return "false"
	case int:
		return strconv.Itoa(x)
	case time.Duration:
		return strconv.FormatInt(int64(x/time.Second), 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case []string:
		return strings.Join(x, ",")
	case map[string]string:
		return formatDict(x)
	}
	return fmt.Sprint(v)
}

// formatDict writes a dict option value, keys sorted: "k1:v1,k2:v2".
func formatDict(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+":"+m[k])
	}
	return strings.Join(parts, ",")
}

func invert(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[v] = k
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }

// OptionError is an invalid option value. Its message names the section, option, value (secrets
// are masked) and reason, prefixed by the file when the value came from one.
type OptionError struct {
	File    string
	Section string
	Option  string
	Value   string
	Reason  string
}

func (e *OptionError) Error() string {
	msg := fmt.Sprintf("[%s] %s = %q: %s", e.Section, e.Option, e.Value, e.Reason)
	if e.File != "" {
		return e.File + ": " + msg
	}
	return msg
}

// The per-option checks. Each returns the reason a value is invalid, or "".

func oneOf(values ...string) func(any) string {
	return func(v any) string {
		if slices.Contains(values, v.(string)) {
			return ""
		}
		return "must be one of " + strings.Join(values, ", ")
	}
}

// atLeast works on ints and on seconds. For seconds, atLeast(1) means "greater than 0" so that
// sub-second durations set in code (tests) pass.
func atLeast(lo int) func(any) string {
	return func(v any) string {
		ok := false
		switch x := v.(type) {
		case int:
			ok = x >= lo
		case time.Duration:
			ok = x >= time.Duration(lo)*time.Second || (lo == 1 && x > 0)
		}
		switch {
		case ok:
			return ""
		case lo == 0:
			return "must not be negative"
		case lo == 1:
			return "must be greater than 0"
		}
		return "must be at least " + strconv.Itoa(lo)
	}
}

func positiveFloat(v any) string {
	if x := v.(float64); x > 0 {
		return ""
	}
	return "must be greater than 0"
}

func port(v any) string {
	if n := v.(int); n >= 0 && n <= 65535 {
		return ""
	}
	return "not a port number (0-65535)"
}

func mtu(v any) string {
	if n := v.(int); n == 0 || (n >= 68 && n <= 65535) {
		return ""
	}
	return "must be 0 (use the network's MTU) or between 68 and 65535"
}

// hostPort accepts "host:port" and "[v6]:port" with a numeric port; the host may be empty (all
// addresses).
func hostPort(v any) string {
	s := v.(string)
	_, p, err := net.SplitHostPort(s)
	if err != nil {
		return "not a host:port address"
	}
	if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 65535 {
		return "not a host:port address: port must be a number 0-65535"
	}
	return ""
}

// optional lets the empty string through (the feature is off) and checks anything else.
func optional(check func(any) string) func(any) string {
	return func(v any) string {
		if v.(string) == "" {
			return ""
		}
		return check(v)
	}
}

func absPath(v any) string {
	if filepath.IsAbs(v.(string)) {
		return ""
	}
	return "must be an absolute path"
}

// httpURL accepts an empty value (unset) or an http(s) URL with a host.
func httpURL(v any) string {
	s := v.(string)
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "not an http or https URL"
	}
	return ""
}

// ifName accepts empty (unset) or a Linux interface name.
func ifName(v any) string {
	s := v.(string)
	if s == "" {
		return ""
	}
	if len(s) > 15 || strings.ContainsAny(s, "/: \t\n") || s == "." || s == ".." {
		return "not a network interface name (at most 15 characters, no '/', ':' or spaces)"
	}
	return ""
}

func neutronTags(v any) string {
	for _, t := range v.([]string) {
		if len(t) > neutronTagMax {
			return fmt.Sprintf("tag %q is longer than Neutron's %d characters", t, neutronTagMax)
		}
	}
	return ""
}

func clusterName(v any) string {
	s := v.(string)
	switch {
	case s == "":
		return "must not be empty: it is tagged on every port"
	case len(clusterTagPrefix)+len(s) > neutronTagMax:
		return fmt.Sprintf("too long: the tag %s<name> must fit Neutron's %d characters", clusterTagPrefix, neutronTagMax)
	case strings.ContainsAny(s, ", \t\n"):
		return "must not contain commas or spaces: it is used as a Neutron tag"
	}
	return ""
}
