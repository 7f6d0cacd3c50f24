-- Argo CD health of a roster.dev MfaReset or PasswordReset: Completed is Healthy, Failed
-- Degraded, the rest Progressing.
local function condition(type)
  for _, c in ipairs(obj.status.conditions or {}) do
    if c.type == type then return c end
  end
  return nil
end

if obj.status == nil or obj.status.phase == nil then
  return {status = "Progressing", message = "waiting for roster"}
end
local ready = condition("Ready") or {}
if obj.status.phase == "Completed" then
  return {status = "Healthy", message = ready.message or "completed"}
end
if obj.status.phase == "Failed" then
  return {status = "Degraded", message = ready.message or "failed"}
end
return {status = "Progressing", message = ready.message or obj.status.phase}
