-- Repair plans (issue 20): ACE's rule files, stored per owner, and the rule that decided each
-- repaired row.

-- A saved plan, as ace.validate_repair_plan normalised it. Each role sees and changes only its
-- own plans: a plan is a decision about its owner's data, not a shared object. Written through
-- ace.save_repair_plan (which validates), read by ace.table_repair(repair_plan => name).
CREATE TABLE ace.repair_plans (
    owner      name NOT NULL DEFAULT current_user,
    plan_name  text NOT NULL CONSTRAINT repair_plan_name CHECK (btrim(plan_name) <> ''),
    plan       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, plan_name)
);
ALTER TABLE ace.repair_plans ENABLE ROW LEVEL SECURITY;
CREATE POLICY repair_plans_own ON ace.repair_plans FOR ALL
    USING (owner = current_user) WITH CHECK (owner = current_user);
GRANT SELECT, INSERT, UPDATE, DELETE ON ace.repair_plans TO PUBLIC;

-- The plan rule (or row override, or default) that decided a row, for repairs with a plan.
ALTER TABLE ace.repair_actions ADD COLUMN rule text;
