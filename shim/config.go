package shim

import (
	"fmt"
	"reflect"
	"strconv"
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
	// The limits below bound what one client certificate can take from the node and the shim.
	EventMinInterval  time.Duration `envconfig:"SHIM_EVENT_MIN_INTERVAL" default:"250ms" desc:"shortest time between two re-reads of one event stream: notifications in between are coalesced into one"`
	MaxStreamsPerCN   int           `envconfig:"SHIM_MAX_STREAMS_PER_CN" default:"4" desc:"event streams one client CN may hold open at once (more get 429)"`
	MaxStreams        int           `envconfig:"SHIM_MAX_STREAMS" default:"64" desc:"event streams the shim holds open at once, over all CNs (more get 429)"`
	MaxBodyBytes      int64         `envconfig:"SHIM_MAX_BODY_BYTES" default:"1048576" desc:"largest request body, in bytes, except an uploaded ACE diff file (more get 413)"`
	MaxUploadBytes    int64         `envconfig:"SHIM_MAX_UPLOAD_BYTES" default:"67108864" desc:"largest body, in bytes, of a repair or rerun that uploads an ACE diff file (more get 413)"`
	MaxUploadsPerCN   int           `envconfig:"SHIM_MAX_UPLOADS_PER_CN" default:"2" desc:"uploads of ACE diff files one client CN may send at once (more get 429)"`
	ReadHeaderTimeout time.Duration `envconfig:"SHIM_READ_HEADER_TIMEOUT" default:"10s" desc:"how long the TLS handshake and a request's headers may take"`
	BodyTimeout       time.Duration `envconfig:"SHIM_BODY_TIMEOUT" default:"2m" desc:"how long a request's body may take to arrive"`
	IdleTimeout       time.Duration `envconfig:"SHIM_IDLE_TIMEOUT" default:"2m" desc:"how long an idle keep-alive connection is kept"`
	LogLevel          string        `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
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

// withDefaults fills every zero number or duration that has a default tag with that default
// (strings keep their meaning: an empty ACE_SHIM_METRICS_LISTEN is off), so a Config
// built in code (tests, embedding) gets the same limits as one read from the environment: the
// tag stays the one place a default is written.
func (c Config) withDefaults() (Config, error) {
	v := reflect.ValueOf(&c).Elem()
	for i := range v.NumField() {
		f, def := v.Field(i), v.Type().Field(i).Tag.Get("default")
		if def == "" || !f.IsZero() {
			continue
		}
		var err error
		switch {
		case f.Type() == reflect.TypeOf(time.Duration(0)):
			var d time.Duration
			d, err = time.ParseDuration(def)
			f.SetInt(int64(d))
		case f.Kind() == reflect.Int || f.Kind() == reflect.Int64:
			var n int64
			n, err = strconv.ParseInt(def, 10, 64)
			f.SetInt(n)
		}
		if err != nil {
			return c, fmt.Errorf("default of %s: %w", v.Type().Field(i).Name, err)
		}
	}
	return c, nil
}

// checkLimits refuses limits that would turn every caller away or mean nothing.
func (c Config) checkLimits() error {
	for name, v := range map[string]int64{"ACE_SHIM_MAX_STREAMS_PER_CN": int64(c.MaxStreamsPerCN), "ACE_SHIM_MAX_STREAMS": int64(c.MaxStreams),
		"ACE_SHIM_MAX_UPLOADS_PER_CN": int64(c.MaxUploadsPerCN), "ACE_SHIM_MAX_BODY_BYTES": c.MaxBodyBytes,
		"ACE_SHIM_EVENT_MIN_INTERVAL": int64(c.EventMinInterval), "ACE_SHIM_BODY_TIMEOUT": int64(c.BodyTimeout),
		"ACE_SHIM_READ_HEADER_TIMEOUT": int64(c.ReadHeaderTimeout), "ACE_SHIM_IDLE_TIMEOUT": int64(c.IdleTimeout)} {
		if v < 0 {
			return fmt.Errorf("%s must not be negative (0 takes its default)", name)
		}
	}
	if c.MaxUploadBytes < c.MaxBodyBytes {
		return fmt.Errorf("ACE_SHIM_MAX_UPLOAD_BYTES (%d) must be at least ACE_SHIM_MAX_BODY_BYTES (%d)", c.MaxUploadBytes, c.MaxBodyBytes)
	}
	return nil
}
