package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// A handler runs one task type's tasks, given their decoded arguments.
type handler struct {
	args reflect.Type // the handler's argument type: sqlapi's registry must name the same
	run  func(a *Agent, ctx context.Context, run *sqlapi.Run, args any) (any, error)
}

// handle makes a handler of a method that takes its task type's argument struct.
func handle[A any](fn func(*Agent, context.Context, *sqlapi.Run, *A) (any, error)) handler {
	return handler{args: reflect.TypeFor[*A](), run: func(a *Agent, ctx context.Context, run *sqlapi.Run, args any) (any, error) {
		typed, ok := args.(*A)
		if !ok {
			return nil, fmt.Errorf("%s arguments decode to %T, but this agent's handler takes %T", run.Task.Type, args, typed)
		}
		return fn(a, ctx, run, typed)
	}}
}

// handlers run each task type of sqlapi.TaskSpecs, once each; TestEveryTaskTypeHasAHandler
// keeps the two lists the same.
var handlers = map[sqlapi.TaskType]handler{
	sqlapi.TypeTableDiff:            handle((*Agent).tableDiff),
	sqlapi.TypeTableRepair:          handle((*Agent).tableRepair),
	sqlapi.TypeTableRerun:           handle((*Agent).tableRerun),
	sqlapi.TypeDiffImport:           handle((*Agent).diffImport),
	sqlapi.TypeMtreeBuild:           handle((*Agent).mtreeBuild),
	sqlapi.TypeMtreeDiff:            handle((*Agent).mtreeDiff),
	sqlapi.TypeMtreeTeardown:        handle((*Agent).mtreeTeardown),
	sqlapi.TypeSpockDiff:            handle((*Agent).spockDiff),
	sqlapi.TypeSpockExceptionSync:   handle((*Agent).spockExceptionSync),
	sqlapi.TypeSpockExceptionUpdate: handle((*Agent).spockExceptionUpdate),
	sqlapi.TypeSchemaDiff:           handle((*Agent).schemaDiff),
	sqlapi.TypeRepsetDiff:           handle((*Agent).repsetDiff),
	sqlapi.TypeNodeResync:           handle((*Agent).nodeResync),
	sqlapi.TypeRepairPolicyRun:      handle((*Agent).repairPolicyRun),
}

// dispatch decodes the task's arguments into its type's argument struct and runs its handler.
func (a *Agent) dispatch(ctx context.Context, run *sqlapi.Run) (any, error) {
	spec, known := sqlapi.Spec(run.Task.Type)
	h, ok := handlers[run.Task.Type]
	if !known || !ok {
		return nil, fmt.Errorf("this agent (version %s) cannot run %q tasks", Version, run.Task.Type)
	}
	args := spec.Args()
	if err := json.Unmarshal(run.Task.Args, args); err != nil {
		return nil, fmt.Errorf("decode %s arguments: %w", run.Task.Type, err)
	}
	return h.run(a, ctx, run, args)
}
