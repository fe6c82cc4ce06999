// Package config loads kuryr.conf: oslo.config INI with kuryr-kubernetes' sections, option names and
// defaults, so that an operator's existing file loads unchanged, plus the options this project adds
// (documented in docs/configuration.md). Parsing is done by gopkg.in/ini.v1 configured to behave
// like oslo.config's parser; this package only types, checks and merges the values.
package config

import (
	"path"
	"slices"
	"time"
)

// Config is the effective kuryr.conf. Build it with Default, Parse or Load.
type Config struct {
	Default           DefaultSection           // [DEFAULT]
	Kubernetes        KubernetesSection        // [kubernetes]
	VIFPool           VIFPoolSection           // [vif_pool]
	NeutronDefaults   NeutronDefaultsSection   // [neutron_defaults]
	PodVIFNested      PodVIFNestedSection      // [pod_vif_nested]
	Binding           BindingSection           // [binding]
	PoolManager       PoolManagerSection       // [pool_manager]
	NamespaceSubnet   NamespaceSubnetSection   // [namespace_subnet]
	CNIDaemon         CNIDaemonSection         // [cni_daemon]
	CNIHealthServer   CNIHealthServerSection   // [cni_health_server]
	Neutron           NeutronSection           // [neutron]
	NodeDriverCaching NodeDriverCachingSection // [node_driver_caching]

	// Found while parsing: deprecated names, misplaced options, ignored values.
	parseWarnings []string
	// "section.option" names that no option of this package claims.
	unknown []string
	// Where each option set by a file was written ("section.option" -> file and name used).
	sources map[string]source
}

// DefaultSection is [DEFAULT]; oslo keeps only global options there.
type DefaultSection struct {
	Debug   bool   // debug
	LogFile string // log_file
}

// KubernetesSection is [kubernetes].
type KubernetesSection struct {
	VIFPoolDriver           string   // vif_pool_driver: noop | neutron | nested | multi_pool
	PodVIFDriver            string   // pod_vif_driver: neutron-vif | nested-vlan (nested-macvlan, nested-dpdk parse but fail Validate)
	EnableManager           bool     // enable_manager: serve the pool-manager socket
	EnabledHandlers         []string // enabled_handlers; entries may be globs such as "*kuryrnet*"
	PodSubnetsDriver        string   // pod_subnets_driver: default | namespace
	PodSecurityGroupsDriver string   // pod_security_groups_driver: default | policy
	PodProjectDriver        string   // pod_project_driver: default | annotation
	PortDebug               bool     // port_debug
	APIRoot                 string   // api_root
	TokenFile               string   // token_file
	SSLCACrtFile            string   // ssl_ca_crt_file
	SSLClientCrtFile        string   // ssl_client_crt_file
	SSLClientKeyFile        string   // ssl_client_key_file
	SSLVerifyServerCrt      bool     // ssl_verify_server_crt
	Kubeconfig              string   // kubeconfig (new): empty means in-cluster, or api_root
	ClusterName             string   // cluster_name (new): tagged on every port as kuryr-cluster=<name>
	ControllerHA            bool     // controller_ha: accepted; our controller always elects a leader
	WatchReconcilePeriod    int      // watch_reconcile_period, seconds
	UseEvents               bool     // use_events
}

// VIFPoolSection is [vif_pool].
type VIFPoolSection struct {
	PortsPoolMax             int               // ports_pool_max: 0 means no limit
	PortsPoolMin             int               // ports_pool_min
	PortsPoolBatch           int               // ports_pool_batch
	PortsPoolUpdateFrequency time.Duration     // ports_pool_update_frequency (int seconds)
	VIFPoolMapping           map[string]string // vif_pool_mapping: pod VIF driver -> pool driver
	PoolsVIFDrivers          map[string]string // pools_vif_drivers (deprecated): pool driver -> pod VIF driver
	PortsPoolCooldown        time.Duration     // ports_pool_cooldown (new): minimum wait before a released port is reused
	PortsPoolIdleTimeout     time.Duration     // ports_pool_idle_timeout (new): free ports unused this long are deleted down to ports_pool_min; 0 = off
}

// NeutronDefaultsSection is [neutron_defaults].
type NeutronDefaultsSection struct {
	Project           string   // project
	PodSubnet         string   // pod_subnet
	PodSecurityGroups []string // pod_security_groups
	ResourceTags      []string // resource_tags
	OVSBridge         string   // ovs_bridge: empty lets the binding use br-int
	NetworkDeviceMTU  int      // network_device_mtu: 0 = the network's MTU
	ExternalSvcNet    string   // external_svc_net (accepted, unused)
	ExternalSvcSubnet string   // external_svc_subnet (accepted, unused)
	ServiceSubnet     string   // service_subnet (accepted, unused)
}

// PodVIFNestedSection is [pod_vif_nested].
type PodVIFNestedSection struct {
	WorkerNodesSubnets []string // worker_nodes_subnets; also holds worker_nodes_subnet after Parse
	WorkerNodesSubnet  string   // worker_nodes_subnet (deprecated single value, merged into the list)
	RevUpdateAttempts  int      // rev_update_attempts
}

// BindingSection is [binding] (kuryr.lib's options).
type BindingSection struct {
	Driver         string   // default_driver (deprecated name: driver)
	LinkIface      string   // link_iface: the VM NIC VLAN interfaces hang from; empty = autodetect
	EnabledDrivers []string // enabled_drivers
	VethDstPrefix  string   // veth_dst_prefix
	DefaultVIFType string   // default_vif_type (new): ovs | bridge, for bare-metal ports Neutron does not describe
	LinuxBridge    string   // linux_bridge (new): bridge for default_vif_type = bridge
	// OVSDBConnection (new ovsdb_connection) is ovs-vsctl's --db for the OVS binding: "" = its default.
	OVSDBConnection string
}

// PoolManagerSection is [pool_manager].
type PoolManagerSection struct {
	SockFile  string // sock_file
	SockGroup string // sock_group (new): group allowed on the socket; empty = root only
}

// NamespaceSubnetSection is [namespace_subnet].
type NamespaceSubnetSection struct {
	PodRouter     string // pod_router
	PodSubnetPool string // pod_subnet_pool
}

// CNIDaemonSection is [cni_daemon].
type CNIDaemonSection struct {
	BindAddress          string        // bind_address (accepted, unused: kuryr-cni talks over SocketPath)
	WorkerNum            int           // worker_num (accepted, unused)
	VIFAnnotationTimeout time.Duration // vif_annotation_timeout (int seconds)
	PyRoute2Timeout      int           // pyroute2_timeout (accepted, unused)
	DockerMode           bool          // docker_mode (accepted, unused)
	NetnsProcDir         string        // netns_proc_dir
	CNIFailuresCount     int           // cni_failures_count
	SocketPath           string        // socket_path (new)
	SocketGroup          string        // socket_group (new): empty = root only
	PoolWaitTimeout      time.Duration // pool_wait_timeout (new): how long ADD waits for a refill of an empty pool
	CheckpointPath       string        // checkpoint_path (new)
	MetricsAddress       string        // metrics_address (new): host:port, empty = no metrics endpoint
	Pprof                bool          // pprof (new): Go's /debug/pprof on the metrics listener, loopback only
}

// CNIHealthServerSection is [cni_health_server].
type CNIHealthServerSection struct {
	Port           int    // port
	HealthAddress  string // health_address (new): host:port; built from port when only port is given
	MaxMemoryUsage int    // max_memory_usage in MiB; -1 = no limit
}

// NeutronSection is [neutron]: the keystoneauth options kuryr.conf carries, plus client limits.
type NeutronSection struct {
	AuthType                    string        // auth_type (deprecated name: auth_plugin)
	AuthURL                     string        // auth_url
	Username                    string        // username
	Password                    string        // password (secret)
	UserID                      string        // user_id
	ProjectName                 string        // project_name (deprecated name: tenant_name)
	ProjectID                   string        // project_id (deprecated name: tenant_id)
	UserDomainName              string        // user_domain_name
	UserDomainID                string        // user_domain_id
	ProjectDomainName           string        // project_domain_name
	ProjectDomainID             string        // project_domain_id
	DomainName                  string        // domain_name
	RegionName                  string        // region_name
	Interface                   string        // interface, or the first of valid_interfaces: public | internal | admin
	EndpointOverride            string        // endpoint_override
	ApplicationCredentialID     string        // application_credential_id
	ApplicationCredentialSecret string        // application_credential_secret (secret)
	ApplicationCredentialName   string        // application_credential_name
	CAFile                      string        // cafile
	Insecure                    bool          // insecure
	Timeout                     time.Duration // timeout (int seconds); 0 = the client's default
	Cloud                       string        // cloud (new): clouds.yaml entry; Load takes OS_CLOUD when unset
	QPS                         float64       // qps (new): token bucket rate for Neutron calls
	Burst                       int           // burst (new)
	MaxConcurrentRequests       int           // max_concurrent_requests (new)
	ListPageSize                int           // list_page_size (new): 0 = one request per listing
}

// NodeDriverCachingSection is [node_driver_caching].
type NodeDriverCachingSection struct {
	Caching   bool          // caching
	CacheTime time.Duration // cache_time (int seconds)
}

// Default returns kuryr's defaults plus ours for the new options.
func Default() *Config {
	return &Config{
		Kubernetes: KubernetesSection{
			VIFPoolDriver:           "noop",
			PodVIFDriver:            "neutron-vif",
			EnabledHandlers:         []string{"vif", "endpoints", "service", "kuryrloadbalancer", "kuryrport"},
			PodSubnetsDriver:        "default",
			PodSecurityGroupsDriver: "default",
			PodProjectDriver:        "default",
			ClusterName:             "kubernetes",
			WatchReconcilePeriod:    120,
			UseEvents:               true,
		},
		VIFPool: VIFPoolSection{
			PortsPoolMax:             0,
			PortsPoolMin:             5,
			PortsPoolBatch:           10,
			PortsPoolUpdateFrequency: 20 * time.Second,
			VIFPoolMapping:           map[string]string{},
			PoolsVIFDrivers:          map[string]string{},
		},
		NeutronDefaults: NeutronDefaultsSection{
			PodSecurityGroups: []string{},
			ResourceTags:      []string{},
		},
		PodVIFNested: PodVIFNestedSection{
			WorkerNodesSubnets: []string{},
			RevUpdateAttempts:  3,
		},
		Binding: BindingSection{
			Driver:         "kuryr.lib.binding.drivers.veth",
			EnabledDrivers: []string{"veth"},
			VethDstPrefix:  "eth",
			DefaultVIFType: "ovs",
			LinuxBridge:    "kuryr0",
		},
		PoolManager: PoolManagerSection{SockFile: "/run/kuryr/kuryr_manage.sock"},
		CNIDaemon: CNIDaemonSection{
			BindAddress:          "127.0.0.1:5036",
			WorkerNum:            30,
			VIFAnnotationTimeout: 60 * time.Second,
			PyRoute2Timeout:      10,
			CNIFailuresCount:     3,
			SocketPath:           "/run/kuryr/cni.sock",
			PoolWaitTimeout:      30 * time.Second,
			CheckpointPath:       "/var/lib/kuryr/checkpoint.json",
			MetricsAddress:       "127.0.0.1:9655",
		},
		CNIHealthServer: CNIHealthServerSection{
			Port:           8090,
			HealthAddress:  "127.0.0.1:8090",
			MaxMemoryUsage: -1,
		},
		Neutron: NeutronSection{
			AuthType:              "password",
			Interface:             "public",
			QPS:                   20,
			Burst:                 40,
			MaxConcurrentRequests: 8,
		},
		NodeDriverCaching: NodeDriverCachingSection{Caching: true, CacheTime: 3600 * time.Second},
	}
}

// Unknown returns the "section.option" names found in the files that this package does not know,
// sorted. Real kuryr.conf files carry many (octavia, logging, oslo); callers log them at debug.
func (c *Config) Unknown() []string {
	return slices.Clone(c.unknown)
}

// Warnings returns what the operator should fix although the configuration works: deprecated
// names, options placed in the wrong section, and values kuryr documents as inadvisable.
func (c *Config) Warnings() []string {
	w := slices.Clone(c.parseWarnings)
	vp := c.VIFPool
	if vp.PortsPoolMax != 0 && vp.PortsPoolBatch > vp.PortsPoolMax {
		w = append(w, "[vif_pool] ports_pool_batch = "+itoa(vp.PortsPoolBatch)+
			" is larger than ports_pool_max = "+itoa(vp.PortsPoolMax)+
			": this value should be smaller than the ports_pool_max; refills stop at ports_pool_max")
	}
	switch {
	case len(vp.VIFPoolMapping) > 0 && len(vp.PoolsVIFDrivers) > 0:
		w = append(w, "[vif_pool] pools_vif_drivers is deprecated and ignored because vif_pool_mapping is set")
	case len(vp.PoolsVIFDrivers) > 0:
		w = append(w, "[vif_pool] pools_vif_drivers is deprecated: write the inverse mapping as vif_pool_mapping = "+
			formatDict(invert(vp.PoolsVIFDrivers)))
	}
	if m, err := c.PoolMapping(); err == nil && len(m) > 0 {
		if _, ok := m[c.Kubernetes.PodVIFDriver]; !ok {
			w = append(w, "[vif_pool] the pool mapping has no entry for [kubernetes] pod_vif_driver = "+
				c.Kubernetes.PodVIFDriver+", which nodes without a pod_vif label use: pods on such nodes get no port")
		}
	}
	return w
}

// handlerAliases maps handler names of older kuryr releases to the handlers that replaced them:
// the KuryrNet CRD handler became kuryrnetwork plus kuryrnetwork_population.
var handlerAliases = map[string][]string{
	"kuryrnet": {"kuryrnetwork", "kuryrnetwork_population"},
}

// HasHandler reports whether enabled_handlers enables name. Entries are matched as globs, as the
// ports-pool documentation writes them ("*kuryrnet*"), and old names count for their successors.
func (k KubernetesSection) HasHandler(name string) bool {
	for _, e := range k.EnabledHandlers {
		if e == name || slices.Contains(handlerAliases[e], name) {
			return true
		}
		if ok, err := path.Match(e, name); err == nil && ok {
			return true
		}
	}
	return false
}

// PopulationEnabled reports whether the handlers that pre-populate the pools of a new namespace's
// subnet are all enabled: namespace, kuryrnetwork and kuryrnetwork_population.
func (k KubernetesSection) PopulationEnabled() bool {
	return k.HasHandler("namespace") && k.HasHandler("kuryrnetwork") && k.HasHandler("kuryrnetwork_population")
}
