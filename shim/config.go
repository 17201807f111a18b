package shim

import (
	"fmt"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/ace-agent/ace-agent/agent"
)

// Config is the shim's configuration, read from ACE_* environment variables like the agent's.
// ACE_DSN is the agent's own: the shim logs in with its certificate, as each caller's role.
type Config struct {
	DSN           string        `envconfig:"DSN" required:"true" desc:"connection string of the local node, naming the agent's client certificate (sslcert, sslkey); the shim logs in with it as each caller's role"`
	Listen        string        `envconfig:"SHIM_LISTEN" default:"0.0.0.0:5000" desc:"HTTPS listen address"`
	CertFile      string        `envconfig:"SHIM_CERT" required:"true" desc:"server certificate (PEM)"`
	KeyFile       string        `envconfig:"SHIM_KEY" required:"true" desc:"server key (PEM)"`
	ClientCAFile  string        `envconfig:"SHIM_CLIENT_CA" required:"true" desc:"CA bundle (PEM) that signs client certificates"`
	CRLFile       string        `envconfig:"SHIM_CRL" desc:"optional certificate revocation list (PEM or DER) of the client CA"`
	AllowedCNs    []string      `envconfig:"SHIM_ALLOWED_CNS" desc:"optional comma-separated list of client CNs let in (empty: every CN the CA signed)"`
	MetricsListen string        `envconfig:"SHIM_METRICS_LISTEN" default:"127.0.0.1:9187" desc:"plain-HTTP listen address of /metrics and /healthz (empty: off)"`
	ImportTimeout time.Duration `envconfig:"SHIM_IMPORT_TIMEOUT" default:"2m" desc:"how long a request that uploads an ACE diff file waits for its import"`
	PollInterval  time.Duration `envconfig:"SHIM_POLL_INTERVAL" default:"2s" desc:"how often the event stream re-reads tasks without a notification"`
	LogLevel      string        `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
}

// LoadConfig reads the configuration from the environment.
func LoadConfig() (Config, error) {
	var c Config
	if err := envconfig.Process("ACE", &c); err != nil {
		return c, fmt.Errorf("read configuration: %w (see 'ace-agent help serve' for the ACE_* variables)", err)
	}
	return c, nil
}

// Usage describes the configuration variables with their defaults.
func Usage() string { return agent.EnvUsage(&Config{}) }
