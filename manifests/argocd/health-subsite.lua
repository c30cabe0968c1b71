-- Argo CD health of kameng.io/SubSite, from its kstatus conditions and phase.
local hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the kameng operator"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end
local c = {}
for _, cond in ipairs(obj.status.conditions) do
  c[cond.type] = cond
end
local phase = obj.status.phase
if phase == "Suspended" or phase == "Expired" then
  hs.status = "Suspended"
  hs.message = (c.LicenseValid and c.LicenseValid.message) or phase
  return hs
end
if c.Ready ~= nil and c.Ready.status == "True" then
  hs.status = "Healthy"
  hs.message = c.Ready.message
  return hs
end
if phase == "Failed" or (c.Stalled ~= nil and c.Stalled.status == "True") then
  hs.status = "Degraded"
  hs.message = (c.Stalled and c.Stalled.message) or (c.Ready and c.Ready.message) or phase
  return hs
end
hs.status = "Progressing"
hs.message = (c.Ready and c.Ready.message) or "Provisioning"
return hs
