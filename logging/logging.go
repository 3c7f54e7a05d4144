// Package logging is the one log style of kube-sts's three binaries: JSON
// lines with ts (ISO 8601), level, logger, msg and snake_case keys, written to
// one writer. The webhook puts controller-runtime's logr on the same core
// (zapr), so its lines and ours cannot differ.
//
// It is a module of its own because shared stays standard library only.
package logging

import (
	"fmt"
	"io"
	"slices"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Levels are the levels a binary's --log-level accepts.
var Levels = []string{"debug", "info", "warn", "error"}

// CheckLevel says whether level is one of Levels, for a binary's Validate.
func CheckLevel(level string) error {
	if !slices.Contains(Levels, level) {
		return fmt.Errorf("%q: use debug, info, warn or error", level)
	}
	return nil
}

// New returns a logger at level (one of Levels) writing to w.
func New(level string, w io.Writer) (*zap.Logger, error) {
	if err := CheckLevel(level); err != nil {
		return nil, err
	}
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	sink := zapcore.AddSync(w)
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), sink, lvl), zap.ErrorOutput(sink)), nil
}

// Endpoint is the log field naming an issuer endpoint: key endpoint, as the
// issuer's metric label is called. Until kube-sts 0.3 the same value is
// also under its former key sts, so that log queries written for 0.1 keep
// working through an upgrade (deprecated; see the CHANGELOG).
func Endpoint(name string) zap.Field { return zap.Inline(endpointField(name)) }

type endpointField string

func (e endpointField) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("endpoint", string(e))
	enc.AddString("sts", string(e))
	return nil
}
