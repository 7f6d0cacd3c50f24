-- Argo CD health of a roster.dev UserInvite: delivered (Sent, Accepted, Expired, Superseded) is Healthy,
-- Revoked is Suspended, a stalled one (SMTP refusing, no user) Degraded, the rest Progressing.
local function condition(type)
  for _, c in ipairs(obj.status.conditions or {}) do
    if c.type == type then return c end
  end
  return nil
end

if obj.status == nil or obj.status.conditions == nil then
  return {status = "Progressing", message = "waiting for roster"}
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  return {status = "Progressing", message = "roster has not seen this change yet"}
end
local ready = condition("Ready") or {}
local stalled = condition("Stalled") or {}
if stalled.status == "True" then
  return {status = "Degraded", message = ready.message or stalled.message or "stalled"}
end
if obj.status.phase == "Revoked" then
  return {status = "Suspended", message = ready.message or "revoked"}
end
if ready.status == "True" then
  return {status = "Healthy", message = ready.message or obj.status.phase}
end
return {status = "Progressing", message = ready.message or "delivering"}
